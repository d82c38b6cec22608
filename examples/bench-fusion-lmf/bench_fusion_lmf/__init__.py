"""Low-rank Multimodal Fusion for bench, registered as ``lmf`` through the ``bench.fusions`` entry point."""

from bench_fusion_lmf.lmf import LowRankFusion

__all__ = ["LowRankFusion"]
__version__ = "0.1.0"
