"""Built-in image plug-ins."""

from baselines.image import timm_encoder  # noqa: F401  (registers "timm")
