"""Built-in tabular plug-ins: MLP, ResNet and FT-Transformer (rtdl), and FT-Mamba."""

from baselines.tabular import ft_mamba, rtdl_encoders  # noqa: F401  (register the encoders)
