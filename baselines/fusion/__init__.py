"""Built-in fusion plug-ins."""

from baselines.fusion import (  # noqa: F401  (each module registers its fusion)
    amc,
    amf,
    concat,
    concat_missing,
    cross_attention,
    gmu,
    late_fusion,
    masked_attention,
    unimodal,
)
