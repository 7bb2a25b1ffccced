"""The Embedder class: one loaded model turning images into float32 L2-normalised vectors.

Preprocessing (:meth:`Embedder.preprocess`, CPU, PIL) and the model call
(:meth:`Embedder.embed_tensors`, the device) are separate steps so that a faster decode path
can feed ready tensors straight to the model: :meth:`Embedder.embed_sources` wires the decode
stages of :mod:`detector.pipeline` (worker threads, reduced-size JPEG decoding, nvJPEG) to the
model. Vectors are L2-normalised in exactly one place, :meth:`Embedder.embed_tensors`.

Build one with :func:`detector.embedder.create_embedder` (which resolves the preset, device,
precision and weights); ``Embedder`` is importable from :mod:`detector.embedder` too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from detector.errors import DetectorError
from detector.images import DEFAULT_MAX_PIXELS, ImageSource
from detector.models.preprocess import (
    build_pil_transform,
    build_transform,
    normalise_uint8_batch,
    preprocess_identity,
)
from detector.models.registry import ModelPreset
from detector.models.weights import ResolvedWeights
from detector.pipeline import (
    EmbedBatchResult,
    RawJpeg,
    WorkerPool,
    make_cpu_prepare,
    make_gpu_prepare,
    prepared_chunks,
    source_name,
)
from index.records import Fingerprint, canonical_json

if TYPE_CHECKING:
    import torch


class Embedder:
    """Embeds images into float32 unit vectors with one model preset.

    Build it with :func:`detector.embedder.create_embedder`. Attributes are read-only by
    convention.

    Attributes:
        preset: The model preset.
        fingerprint: Identity of the vectors (arch, weights, preprocessing, dim); vectors
            from embedders with different fingerprints must not be mixed.
        dim: Vector dimension.
        device: Where the model runs.
        batch_size: Largest batch sent to the model at once.
        precision: ``"fp32"``, ``"fp16"`` or ``"bf16"``; outputs are float32 anyway. On CPU,
            bf16 casts the model's weights (autocast gives no speed-up there); on a GPU,
            fp16/bf16 use autocast, which keeps numerically touchy ops in fp32.
        model: The torch module mapping (n, 3, S, S) tensors to (n, dim) raw features.
        decode_workers: Threads decoding/resizing for :meth:`embed_sources` and
            :meth:`embed` while the model runs (0: inline, in the calling thread).
        draft: Whether :meth:`embed_sources` decodes large JPEGs at reduced size
            (:attr:`draft_size`).
        channels_last: Whether the model and its inputs use the channels-last memory format.
        gpu_decode: Whether :meth:`embed_sources` decodes JPEGs on the GPU (CUDA only).
    """

    def __init__(
        self,
        preset: ModelPreset,
        model: torch.nn.Module,
        weights: ResolvedWeights,
        *,
        device: torch.device,
        batch_size: int,
        precision: str,
        decode_workers: int = 0,
        draft: bool = False,
        channels_last: bool = False,
        gpu_decode: bool = False,
    ) -> None:
        import torch

        self.preset = preset
        self.weights = weights
        self.device = device
        self.batch_size = batch_size
        self.precision = precision
        self.decode_workers = decode_workers
        self.draft = draft
        self.channels_last = channels_last
        self.gpu_decode = gpu_decode and device.type == "cuda"
        # On CPU, a bf16 *cast* model is what runs fast (oneDNN bf16 kernels); autocast leaves
        # the matmuls' weights in fp32 and measured no faster than fp32.
        self._input_dtype = (
            torch.bfloat16 if precision == "bf16" and device.type == "cpu" else torch.float32
        )
        if self._input_dtype != torch.float32:
            model = model.to(dtype=self._input_dtype)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.dim = preset.dim
        self.fingerprint = Fingerprint(
            preset=preset.name,
            arch=preset.arch_id,
            weights=weights.identity,
            preprocess=canonical_json(preprocess_identity(preset)),
            dim=preset.dim,
        )
        self._transform: Callable[[Image.Image], torch.Tensor] = build_transform(preset)
        self._pil_transform = build_pil_transform(preset)
        self._pool = WorkerPool(decode_workers, f"embed-{preset.name}")
        self._tensor_transform: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __repr__(self) -> str:
        return (
            f"Embedder(preset={self.preset.name!r}, weights={self.weights.identity!r}, "
            f"device={str(self.device)!r}, precision={self.precision!r}, "
            f"batch_size={self.batch_size}, decode_workers={self.decode_workers}, "
            f"draft={self.draft}, channels_last={self.channels_last}, "
            f"gpu_decode={self.gpu_decode})"
        )

    @property
    def image_size(self) -> int:
        return self.preset.image_size

    @property
    def draft_size(self) -> int | None:
        """Shortest side JPEGs are decoded to when ``draft`` is on: twice the model input.

        libjpeg's 1/2, 1/4, 1/8 DCT scaling is used only while the image stays at least this
        large; the preset's own resize does the rest. It is off in the built-in presets: on
        3000x2000 photos it measured cosine 0.9835 (min) to a full decode with effnet-lite0's
        real weights, below the 0.998 bar (random-weight ViT-B-32: 0.99995). Callers loading
        images themselves can pass it to :func:`detector.images.load_image`.
        """
        return 2 * self.image_size if self.draft else None

    def close(self) -> None:
        """Stop the decode worker threads (they are restarted if the embedder is used again)."""
        self._pool.shutdown()

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """The preset's preprocessing of one image: a (3, S, S) float32 CPU tensor.

        Non-RGB images are converted like :func:`detector.images.to_rgb` (alpha on white).
        """
        return self._transform(image)

    def preprocess_batch(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Preprocess and stack images into an (n, 3, S, S) tensor."""
        import torch

        if not images:
            return torch.empty((0, 3, self.image_size, self.image_size), dtype=torch.float32)
        return torch.stack([self._transform(img) for img in images])

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embed PIL images.

        Args:
            images: Decoded images (see :func:`detector.images.load_image`).

        Returns:
            (n, dim) float32 array of unit rows, in input order; (0, dim) for no images.

        Example:
            >>> from detector.embedder import create_embedder
            >>> create_embedder("tiny-clip-test").embed([Image.new("RGB", (80, 60))]).shape
            (1, 64)
        """
        images = list(images)
        names = [source_name(img) for img in images]
        parts = [
            self._embed_pixels(chunk.items)
            for chunk in prepared_chunks(
                images,
                names,
                self._prepare_pil,
                chunk_size=self.batch_size,
                pool=self._pool.get(),
                catch=False,
            )
        ]
        return np.concatenate(parts) if parts else np.empty((0, self.dim), dtype=np.float32)

    def embed_pixels(self, pixels: Sequence[np.ndarray]) -> np.ndarray:
        """Embed images already through the preset's geometric preprocessing
        (:func:`~detector.models.preprocess.build_pil_transform`): ``(S, S, 3)`` uint8 arrays,
        what :meth:`embed` makes of PIL images, here prepared elsewhere (e.g. by Ray tasks).

        Returns:
            (n, dim) float32 array of unit rows, in input order; the same vectors :meth:`embed`
            gives for the images the pixels were made from.
        """
        parts = [
            self._embed_pixels(pixels[start : start + self.batch_size])
            for start in range(0, len(pixels), self.batch_size)
        ]
        return np.concatenate(parts) if parts else np.empty((0, self.dim), dtype=np.float32)

    def embed_sources(
        self,
        sources: Sequence[ImageSource],
        names: Sequence[str] | None = None,
        *,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> EmbedBatchResult:
        """Read, decode and embed images; bad items are reported, not raised.

        Decoding and resizing run in ``decode_workers`` threads (large JPEGs at reduced size
        when ``draft`` is on; on the GPU when ``gpu_decode`` is on), overlapping the model.

        Args:
            sources: Paths, encoded bytes, binary file objects or PIL images.
            names: How to call each item in errors; default from the source.
            max_pixels: Largest accepted image (see :func:`detector.images.load_image`).

        Returns:
            Vectors of the good items (input order) and one ``ItemError`` per bad item.

        Example:
            >>> res = create_embedder("tiny-clip-test").embed_sources(["a.jpg", "broken.jpg"])
            ... # doctest: +SKIP
            >>> res.vectors.shape, [e.index for e in res.errors]  # doctest: +SKIP
            ((1, 64), [1])
        """
        sources = list(sources)
        names = [source_name(s) for s in sources] if names is None else list(names)
        if len(names) != len(sources):
            raise ValueError(f"names has {len(names)} entries for {len(sources)} sources")
        cpu_prepare = make_cpu_prepare(
            self._pil_transform, max_pixels=max_pixels, draft_size=self.draft_size
        )
        prepare: Callable = cpu_prepare
        if self.gpu_decode:
            prepare = make_gpu_prepare(cpu_prepare, max_pixels=max_pixels)
        parts, indices, errors = [], [], []
        for chunk in prepared_chunks(
            sources, names, prepare, chunk_size=self.batch_size, pool=self._pool.get()
        ):
            errors.extend(chunk.errors)
            if not chunk.items:
                continue
            pixels = chunk.items
            if self.gpu_decode:
                pixels, failed = self._decode_on_device(
                    chunk.items, chunk.indices, names, cpu_prepare
                )
                errors.extend(failed)
                keep = [i for i, px in zip(chunk.indices, pixels) if px is not None]
                pixels = [px for px in pixels if px is not None]
            else:
                keep = chunk.indices
            if pixels:
                parts.append(self._embed_pixels(pixels))
                indices.extend(keep)
        errors.sort(key=lambda e: e.index)
        vectors = np.concatenate(parts) if parts else np.empty((0, self.dim), dtype=np.float32)
        return EmbedBatchResult(vectors, tuple(indices), tuple(errors), len(sources))

    def embed_tensors(self, batch: torch.Tensor) -> np.ndarray:
        """Run the model on preprocessed images and L2-normalise (the one place that does).

        Args:
            batch: (n, 3, S, S) tensor as produced by :meth:`preprocess_batch`, any device.

        Returns:
            (n, dim) float32 array of unit rows.

        Raises:
            ValueError: The tensor has the wrong shape.
            DetectorError: The model produced non-finite values (e.g. fp16 overflow).
        """
        import torch

        expected = (3, self.image_size, self.image_size)
        if batch.ndim != 4 or tuple(batch.shape[1:]) != expected:
            raise ValueError(
                f"expected a (n, {', '.join(map(str, expected))}) tensor, got {tuple(batch.shape)}"
            )
        if batch.shape[0] == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        out = []
        with torch.inference_mode(), self._autocast():
            for start in range(0, batch.shape[0], self.batch_size):
                x = batch[start : start + self.batch_size].to(self.device, dtype=self._input_dtype)
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                out.append(self.model(x).float())
        feats = torch.cat(out)
        if not torch.isfinite(feats).all():
            raise DetectorError(
                f"model {self.preset.name!r} produced non-finite features at precision "
                f"{self.precision!r}; try precision='fp32'"
            )
        return _l2_normalise(feats).cpu().numpy().astype(np.float32, copy=False)

    # --- fast path internals ---------------------------------------------------------------

    def _prepare_pil(self, image: Image.Image, name: str) -> np.ndarray:
        return np.array(self._pil_transform(image), dtype=np.uint8)

    def _embed_pixels(self, pixels: Sequence[np.ndarray | torch.Tensor]) -> np.ndarray:
        """(S, S, 3) uint8 images (NumPy on CPU, or tensors on the device) -> unit vectors."""
        import torch

        if all(isinstance(p, np.ndarray) for p in pixels):
            batch = torch.from_numpy(np.stack(pixels))
            if self.device.type == "cuda":
                batch = batch.pin_memory()  # lets the copy below run asynchronously
        else:  # GPU-decoded tensors, maybe mixed with CPU-decoded fallbacks
            batch = torch.stack(
                [
                    (torch.from_numpy(p) if isinstance(p, np.ndarray) else p).to(self.device)
                    for p in pixels
                ]
            )
        # Normalising where the model runs sends uint8 (4x fewer bytes) to a GPU.
        return self.embed_tensors(normalise_uint8_batch(batch, self.preset, device=self.device))

    def _decode_on_device(
        self,
        items: list[np.ndarray | RawJpeg],
        indices: list[int],
        names: list[str],
        cpu_prepare: Callable,
    ) -> tuple[list[torch.Tensor | np.ndarray | None], list]:
        """Decode the chunk's RawJpeg items with nvJPEG; items it refuses go the PIL way.

        Runs in the calling thread: nvJPEG batches best in one call, and the GPU is the
        model's anyway.
        """
        from detector.models.tensor_preprocess import build_tensor_transform, decode_jpegs
        from detector.pipeline import ItemError

        if self._tensor_transform is None:
            self._tensor_transform = build_tensor_transform(self.preset)
        raw = [k for k, item in enumerate(items) if isinstance(item, RawJpeg)]
        decoded = decode_jpegs([items[k].data for k in raw], self.device)  # type: ignore[union-attr]
        out: list = list(items)
        errors = []
        for k, img in zip(raw, decoded):
            if img is not None:
                out[k] = self._tensor_transform(img)
                continue
            try:
                out[k] = cpu_prepare(items[k].data, names[indices[k]])  # type: ignore[union-attr]
            except DetectorError as e:
                out[k] = None
                errors.append(ItemError(indices[k], names[indices[k]], str(e)))
        return out, errors

    def _autocast(self) -> contextlib.AbstractContextManager:
        import torch

        if self.precision == "fp32" or self._input_dtype != torch.float32:
            return contextlib.nullcontext()
        dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
        return torch.autocast(device_type=self.device.type, dtype=dtype)


def _l2_normalise(feats: torch.Tensor) -> torch.Tensor:
    import torch

    # The clamp keeps an all-zero row at zero instead of NaN; real features are never zero.
    return feats / torch.linalg.vector_norm(feats, dim=1, keepdim=True).clamp_min(1e-12)
