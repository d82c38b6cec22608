"""Built-in fusion plug-ins."""

from baselines.fusion import amf, concat, cross_attention  # noqa: F401  (register "amf", "concat", "cross_attention")
