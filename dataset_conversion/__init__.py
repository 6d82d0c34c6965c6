"""Dataset converters (installed as ``nnunetv2_confkd_conversion``; console scripts ``confkd_convert_acdc``,
``confkd_convert_lits``, ``confkd_convert_mixed``, ``confkd_convert_synthetic``). The machinery they share:
:mod:`~.writer` (writing a dataset) with :mod:`~.cases`, :mod:`~.case_writer`, :mod:`~.splits`,
:mod:`~.atomic_output` and :mod:`~.dense_twin`; :mod:`~.options` (the command line) with :mod:`~.amounts`,
:mod:`~.budget`, :mod:`~.holdout`, :mod:`~.component_policy` and :mod:`~.reporting`; :mod:`~.weak_labels` (the
weak-label simulators) with :mod:`~.slice_regions`, :mod:`~.region_annotators` and :mod:`~.simulator_inputs`."""
