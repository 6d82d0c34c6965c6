"""Dataset converters (installed as ``nnunetv2_confkd_conversion``; console scripts ``confkd_convert_acdc``,
``confkd_convert_lits``, ``confkd_mixed_dataset``). The shared machinery is :mod:`nnunetv2_confkd.conversion`."""
