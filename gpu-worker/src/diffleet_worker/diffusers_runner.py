"""The real runner: a DispatchedJob through diffusers on this worker's device.

Steps of one run (in a worker thread; one run on the device at a time):
  1. check the order (model types and families match the task)
  2. fetch the input images (init, mask, control, IP-Adapter) from S3
  3. take the generation's models from the cache: the checkpoint, the ControlNets, their
     detectors and the VAE override loaded (hot, else warm from disk, else cold from S3),
     the LoRAs, embeddings and IP-Adapters as files (their image encoder loaded); each
     control image preprocessed (controls.py)
  4. run the task pipeline (hires fix included) with the LoRAs, embeddings and
     IP-Adapters (with their image encoder, ip_adapters.py) applied, reporting each step
     (with a preview every few steps) and stopping at the next step when cancelled; on
     out-of-memory, free the cache and retry once with attention slicing and VAE
     tiling. Mode upscale skips 3 and 4: its image is the init image
  5. post-process each image: upscale, then restore faces, then remove the background
     (background.py: RGBA from here on); each model from the cache when its step comes;
     these steps report no progress, and stop between tiles when cancelled
  6. finish (finishing.py): the policy's output classifier, the watermark, each image
     encoded in the job's format with its parameters, and uploaded
"""

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from diffleet_core.messages import DispatchedJob, DispatchedTraining, ModelRef
from diffleet_core.model_rules import JobModelRefs, control_field, incompatibilities
from diffleet_core.resources.conditions import Reason
from diffleet_core.resources.generation_job import MAX_SEED, GenerationJobSpec, Mode
from diffleet_core.resources.model_cache import ModelType
from diffleet_core.telemetry import tracer
from diffleet_worker import background, controls, metrics
from diffleet_worker.cache import (
    DATASETS,
    CacheStats,
    CacheTier,
    DatasetCache,
    HotCache,
    Loaded,
    ModelCacheError,
    ModelStore,
    S3Source,
    WarmCache,
)
from diffleet_worker.config import WorkerSettings
from diffleet_worker.device import (
    DevicePolicy,
    MemoryBudget,
    configure_torch,
    free_device_memory,
    is_out_of_memory,
)
from diffleet_worker.embeddings import LoadedEmbedding
from diffleet_worker.embeddings import applied as embeddings_applied
from diffleet_worker.finishing import finish, finish_video
from diffleet_worker.images import InputImageError, fetch_image
from diffleet_worker.ip_adapters import LoadedIpAdapter
from diffleet_worker.ip_adapters import applied as ip_adapters_applied
from diffleet_worker.loading import Loader, resident_bytes
from diffleet_worker.loras import LoadedLora, adapter_name
from diffleet_worker.loras import applied as loras_applied
from diffleet_worker.parameters import parameters_text
from diffleet_worker.pipelines import img2img, inpaint, outpaint, txt2img, video
from diffleet_worker.pipelines.common import Generation, StepReport, denoised_size
from diffleet_worker.pipelines.restore import restore
from diffleet_worker.pipelines.upscale import upscale
from diffleet_worker.preprocessors import PreprocessError
from diffleet_worker.previews import preview_base64
from diffleet_worker.runner import (
    JobCancelledError,
    RunFailedError,
    RunResult,
    StepCallback,
    TrainingHooks,
    TrainingOutcome,
)

logger = logging.getLogger(__name__)

TASKS: dict[Mode, Callable[[Any, Generation], list[Image.Image]]] = {
    Mode.TXT2IMG: txt2img.run,
    Mode.IMG2IMG: img2img.run,
    Mode.INPAINT: inpaint.run,
    Mode.OUTPAINT: outpaint.run,
    Mode.IMG2VID: video.img2vid,
    Mode.TXT2VID: video.txt2vid,
}


@dataclass(frozen=True)
class Inputs:
    """A job's input images, decoded and sized; the control images as sent, one per
    spec.controls entry."""

    init: Image.Image | None = None
    mask: Image.Image | None = None
    controls: tuple[Image.Image, ...] = ()
    # One per ipAdapters entry, as sent (the image encoder's processor sizes them).
    image_prompts: tuple[Image.Image, ...] = ()


class DiffusersRunner:
    def __init__(
        self,
        settings: WorkerSettings,
        store: ModelStore[Any],
        datasets: DatasetCache,
        loader: Loader,
        s3: Any,
    ) -> None:
        self.settings = settings
        self.store = store
        self.datasets = datasets
        self.loader = loader
        self.policy: DevicePolicy = loader.policy
        self.s3 = s3
        self.budget = MemoryBudget(settings.memory_budget_bytes)
        self._device = asyncio.Lock()
        self._counted = CacheStats()

    @classmethod
    def build(cls, settings: WorkerSettings, s3: Any) -> "DiffusersRunner":
        """The runner with its device policy, loader, three-tier model store and dataset
        cache (beside the warm tier, in its own budget)."""
        configure_torch(settings.threads, settings.deterministic)
        policy = DevicePolicy.choose(
            settings.device,
            settings.precision,
            use_xformers=settings.xformers,
            compile_unet=settings.compile_unet,
            vae_tiling_pixels=settings.vae_tiling_pixels,
        )
        loader = Loader(policy)
        store: ModelStore[Any] = ModelStore(
            S3Source(s3),
            WarmCache(settings.cache_dir, settings.disk_budget_bytes),
            HotCache(settings.hot_budget_bytes, resident_bytes, loader.release),
        )
        datasets = DatasetCache(settings.cache_dir / DATASETS, settings.dataset_cache_bytes)
        logger.info("device %s, model cache %s", policy.describe(), settings.cache_dir)
        return cls(settings, store, datasets, loader, s3)

    def hot_models(self) -> list[str]:
        return self.store.hot_digests()

    def warm_models(self) -> list[str]:
        return self.store.warm_digests()

    def hot_slots(self) -> int | None:
        return None  # the hot tier is bounded by bytes, not models

    async def run(
        self, order: DispatchedJob, cancelled: asyncio.Event, on_step: StepCallback
    ) -> RunResult:
        loop = asyncio.get_running_loop()

        def report(step: int, total: int, eta: float | None, preview: str | None) -> None:
            asyncio.run_coroutine_threadsafe(on_step(step, total, eta, preview), loop)

        async with self._device:
            started = time.monotonic()
            try:
                result = await asyncio.to_thread(self._run, order, cancelled, report)
            except JobCancelledError:
                metrics.JOBS.labels("cancelled").inc()
                raise
            except Exception:
                metrics.JOBS.labels("failed").inc()
                raise
            finally:
                self._count_cache()
            metrics.JOBS.labels("succeeded").inc()
            metrics.RUN_SECONDS.observe(time.monotonic() - started)
            return result

    async def warm(self, model: ModelRef) -> None:
        """Loads `model` into the hot tier (from disk, or S3 first), on the device as a
        job's model; it then stays hot until the hot tier's budget evicts it."""
        async with self._device:
            try:
                await asyncio.to_thread(self._warm, model)
            finally:
                self._count_cache()

    async def train(self, order: DispatchedTraining, hooks: TrainingHooks) -> TrainingOutcome:
        """Trains on this worker's device, in turn with the jobs; the trainer's copy of
        the base model is freed when it ends."""
        # torch's training stack (peft) is imported by the first training only.
        from diffleet_worker.training import orders

        async with self._device:
            try:
                with self._cache_errors():
                    return await asyncio.to_thread(
                        orders.train,
                        order,
                        hooks,
                        self.store,
                        self.datasets,
                        self.s3,
                        self.policy.device,
                    )
            finally:
                self._count_cache()
                free_device_memory(self.policy)

    def _warm(self, model: ModelRef) -> None:
        with self._cache_errors(), self._loaded(model, keep_hot=[]) as loaded:
            metrics.MODEL_WARMED.labels(loaded.tier.value).inc()

    def _run(
        self,
        order: DispatchedJob,
        cancelled: asyncio.Event,
        report: Callable[[int, int, float | None, str | None], None],
    ) -> RunResult:
        spec = order.spec
        # 1. Check the order.
        check_order(order)
        # 2. Fetch the input images.
        with tracer.start_as_current_span("fetch"):
            inputs = self._fetch_inputs(order)
        seeds = [(order.seed + i) % (MAX_SEED + 1) for i in range(spec.batch_size)]
        # 3-4. Generate: the models taken from the cache, the task run with them (mode
        # upscale generates nothing: its image is the init image).
        strength: float | None = None
        if spec.mode is Mode.UPSCALE:
            assert inputs.init is not None, "a rule requires initImage in mode upscale"
            images = [inputs.init] * spec.batch_size
        else:
            strength = denoising_strength(spec, self.settings.strength)
            generation = Generation(
                spec=spec,
                seeds=seeds,
                policy=self.policy,
                on_step=self._step_report(order, cancelled, report),
                strength=strength,
                feather_radius=self.settings.mask_feather_pixels,
                init_image=inputs.init,
                mask_image=inputs.mask,
                image_prompts=inputs.image_prompts,
            )
            images = self._generation(order, generation, inputs.controls, cancelled)
        if cancelled.is_set():
            raise JobCancelledError
        # 5. Post-process: upscale, restore faces, remove the background.
        with tracer.start_as_current_span("postprocess"):
            images = self._postprocess(order, images, seeds, cancelled.is_set)
        # 6. Finish: the policy's checks, then the files in S3.
        return self._finish(order, images, seeds, strength)

    def _generation(
        self,
        order: DispatchedJob,
        generation: Generation,
        control_images: tuple[Image.Image, ...],
        cancelled: asyncio.Event,
    ) -> list[Image.Image]:
        """The task's images: its models taken from the cache (the checkpoint, ControlNets,
        detectors and VAE loaded: hot, else warm from disk, else cold from S3; LoRAs and
        embeddings as files), the control images preprocessed, the task run with the
        LoRAs and embeddings applied to the checkpoint."""
        spec = order.spec
        with ExitStack() as held, self._cache_errors():
            with tracer.start_as_current_span("load"):
                base = held.enter_context(self._acquire(order.model, order.keep_hot))
                extra: dict[str, Any] = {}
                if order.vae is not None:
                    extra["vae"] = held.enter_context(self._acquire(order.vae, order.keep_hot))
                if order.motion_adapter is not None:
                    extra["motion_adapter"] = held.enter_context(
                        self._acquire(order.motion_adapter, order.keep_hot)
                    )
                if order.control_nets:
                    extra["controls"] = self._controls(held, order, control_images)
                loras = [
                    LoadedLora(adapter_name(index), self._file(held, ref), lora.weight)
                    for index, (ref, lora) in enumerate(
                        zip(order.loras, spec.loras or [], strict=True)
                    )
                ]
                embeddings = [
                    LoadedEmbedding(ref.name, self._file(held, ref)) for ref in order.embeddings
                ]
                encoder = (
                    held.enter_context(self._acquire(order.image_encoder, order.keep_hot))
                    if order.image_encoder is not None
                    else None
                )
                ip_adapters = [
                    LoadedIpAdapter(self._file(held, ref), entry.scale)
                    for ref, entry in zip(order.ip_adapters, spec.ip_adapters or [], strict=True)
                ]
            if cancelled.is_set():
                raise JobCancelledError
            generation = replace(generation, **extra)
            if spec.mode is Mode.TXT2VID:
                # The LoRAs and embeddings then apply to the motion pipeline's own UNet.
                base = video.motion_pipeline(base, generation)
            with (
                tracer.start_as_current_span("denoise"),
                loras_applied(base, loras),
                embeddings_applied(base, embeddings),
                ip_adapters_applied(base, encoder, ip_adapters),
            ):
                return self._generate(base, generation)

    def _controls(
        self, held: ExitStack, order: DispatchedJob, images: tuple[Image.Image, ...]
    ) -> controls.Controls:
        """The job's ControlNets and detectors, held until the run ends, and each entry's
        conditioning image."""
        controlnets = [
            held.enter_context(self._acquire(ref, order.keep_hot)) for ref in order.control_nets
        ]
        loaded = [held.enter_context(self._acquire(ref, order.keep_hot)) for ref in order.detectors]
        detectors = {detector.control_type: detector for detector in loaded}
        try:
            return controls.prepare(order.spec, order.control_types, controlnets, images, detectors)
        except PreprocessError as error:
            raise RunFailedError(Reason.INVALID_SPEC, str(error)) from error

    def _file(self, held: ExitStack, ref: ModelRef) -> Path:
        """A model the run reads itself (LoRA, embedding), on disk until the run ends."""
        fetched = held.enter_context(self.store.fetch(ref))
        metrics.MODEL_SERVED.labels(fetched.tier.value).inc()
        return fetched.path

    def _postprocess(
        self,
        order: DispatchedJob,
        images: list[Image.Image],
        seeds: list[int],
        cancelled: Callable[[], bool],
    ) -> list[Image.Image]:
        """Upscaling, then face restoration, then background removal, of each image; each
        model taken from the cache when its step comes (after the generation's are
        released, so the hot tier can make room by evicting them)."""
        spec = order.spec
        with self._cache_errors():
            if spec.upscale is not None and order.upscaler is not None:
                with self._acquire(order.upscaler, order.keep_hot) as upscaler:
                    images = [
                        upscale(image, upscaler, spec, spec.upscale, seed, cancelled)
                        for image, seed in zip(images, seeds, strict=True)
                    ]
            if spec.restore_faces is not None and order.restorer is not None:
                strength = spec.restore_faces.strength
                with self._acquire(order.restorer, order.keep_hot) as restorer:
                    images = [
                        restore(image, restorer, strength, seed)
                        for image, seed in zip(images, seeds, strict=True)
                    ]
            if spec.remove_background is not None and order.background_remover is not None:
                with self._acquire(order.background_remover, order.keep_hot) as remover:
                    images = [background.remove(image, remover) for image in images]
        if cancelled():
            raise JobCancelledError
        return images

    def _finish(
        self,
        order: DispatchedJob,
        images: list[Image.Image],
        seeds: list[int],
        strength: float | None,
    ) -> RunResult:
        parameters = [parameters_text(order, seed, strength) for seed in seeds]
        with ExitStack() as held, self._cache_errors():
            checker = (
                held.enter_context(self._acquire(order.safety, order.keep_hot))
                if order.safety is not None
                else None
            )
            if order.spec.mode.is_video:  # the images are the frames of one clip
                clip = finish_video(order, images, parameters[0], checker, self.s3, self.settings)
                outputs = [clip]
            else:
                outputs = finish(order, images, parameters, checker, self.s3, self.settings)
        return RunResult(
            outputs=outputs,
            model_digest=order.model.digest,
            lora_digests={ref.name: ref.digest for ref in order.loras},
        )

    def _fetch_inputs(self, order: DispatchedJob) -> "Inputs":
        spec = order.spec
        size = (spec.width, spec.height)
        try:
            init = mask = None
            if spec.init_image is not None:
                init = fetch_image(self.s3, spec.init_image, "initImage", size, "RGB")
            if spec.mask_image is not None:
                mask = fetch_image(self.s3, spec.mask_image, "maskImage", size, "L")
            # The control images guide the whole canvas (an outpaint's too).
            control_images = tuple(
                fetch_image(
                    self.s3,
                    entry.image,
                    f"{control_field(spec, index)}.image",
                    spec.generated_size,
                    "RGB",
                )
                for index, entry in enumerate(spec.controls)
            )
            image_prompts = tuple(
                fetch_image(self.s3, entry.image, f"ipAdapters[{index}].image", None, "RGB")
                for index, entry in enumerate(spec.ip_adapters or [])
            )
        except InputImageError as error:
            raise RunFailedError(Reason.INVALID_SPEC, str(error)) from error
        return Inputs(init, mask, control_images, image_prompts)

    @contextmanager
    def _acquire(self, ref: ModelRef, keep_hot: list[str]) -> Iterator[Any]:
        with self._loaded(ref, keep_hot) as loaded:
            metrics.MODEL_SERVED.labels(loaded.tier.value).inc()
            yield loaded.value

    def _loaded(self, ref: ModelRef, keep_hot: list[str]) -> Loaded[Any]:
        """The model from the store, loaded onto the device if it was not hot; making room,
        idle models `keep_hot` does not list go first."""
        loaded = self.store.acquire(ref, lambda path: self.loader.load(ref, path), keep_hot)
        if loaded.tier is not CacheTier.HOT and ref.type is ModelType.CHECKPOINT:
            metrics.CHECKPOINT_LOADS.labels(loaded.tier.value).inc()
        return loaded

    @staticmethod
    @contextmanager
    def _cache_errors() -> Iterator[None]:
        try:
            yield
        except ModelCacheError as error:
            raise RunFailedError(error.reason, str(error), retryable=error.retryable) from error

    def _generate(self, base: Any, generation: Generation) -> list[Image.Image]:
        spec = generation.spec
        task = TASKS[spec.mode]
        width, height = denoised_size(spec)
        images = spec.batch_size * spec.frame_count  # a video denoises all its frames at once
        try:
            self.budget.check(width, height, images, low_memory=False)
            return task(base, generation)
        except Exception as error:
            if not is_out_of_memory(error):
                raise
            metrics.OUT_OF_MEMORY.labels("true").inc()
            logger.warning("out of memory (%s); retrying with slicing and tiling", error)
        self.store.evict_all()
        free_device_memory(self.policy)
        try:
            self.budget.check(width, height, images, low_memory=True)
            return task(base, replace(generation, low_memory=True))
        except Exception as error:
            if not is_out_of_memory(error):
                raise
            metrics.OUT_OF_MEMORY.labels("false").inc()
            raise RunFailedError(Reason.OUT_OF_MEMORY, f"out of device memory: {error}") from error
        finally:
            self.policy.restore_attention(base)

    def _step_report(
        self,
        order: DispatchedJob,
        cancelled: asyncio.Event,
        report: Callable[[int, int, float | None, str | None], None],
    ) -> StepReport:
        every = self.settings.preview_every_steps
        family = order.model.base_model
        step_time = metrics.STEP_SECONDS.labels(self.settings.gpu_type)
        started = last = time.monotonic()

        def on_step(pipeline: Any, step: int, total: int, latents: torch.Tensor | None) -> None:
            nonlocal last
            ended = time.monotonic()
            step_time.observe(ended - last)  # the step alone, not this callback's work
            eta = (ended - started) / step * (total - step)
            preview = None
            previewed = every and step % every == 0 and step < total
            if previewed and latents is not None and family is not None:
                preview = preview_base64(latents, family)
            report(step, total, eta, preview)
            if cancelled.is_set():
                # diffusers' documented way to stop a pipeline at the next step.
                pipeline._interrupt = True
            last = time.monotonic()

        return on_step

    def _count_cache(self) -> None:
        """Moves the store's counters into the Prometheus counters."""
        now = self.store.stats
        metrics.MODEL_DOWNLOADS.inc(now.downloads - self._counted.downloads)
        metrics.MODEL_CORRUPT.inc(now.corrupt_refetches - self._counted.corrupt_refetches)
        self._counted = now


def denoising_strength(spec: GenerationJobSpec, default: float) -> float:
    """The job's strength, else the worker's default; else 1 where the masked area is
    drawn anew rather than changed: outpaint (its padding holds only a placeholder fill)
    and object removal (inpaint with an empty prompt: at a lower strength the noised
    object shows through and comes back)."""
    if spec.strength is not None:
        return spec.strength
    anew = spec.mode is Mode.OUTPAINT or (spec.mode is Mode.INPAINT and not spec.prompt)
    return 1.0 if anew else default


def check_order(order: DispatchedJob) -> None:
    """Refuses an order whose models do not fit together (InvalidSpec, not retried).
    Admission refuses such jobs first (IncompatibleModels); this guards what it cannot
    see: a ModelCache replaced between admission and dispatch, or a malformed order."""
    problems = incompatibilities(JobModelRefs.of_order(order), order.spec)
    spec = order.spec
    if len(order.loras) != len(spec.loras or []):
        problems.append("loras: the order does not resolve every LoRA of the spec")
    if not len(order.control_nets) == len(order.control_types) == len(spec.controls):
        problems.append("controlNets: the order does not resolve every ControlNet of the spec")
    if len(order.embeddings) != len(spec.embeddings or []):
        problems.append("embeddings: the order does not resolve every embedding of the spec")
    if len(order.ip_adapters) != len(spec.ip_adapters or []) or (
        bool(order.ip_adapters) != (order.image_encoder is not None)
    ):
        problems.append("ipAdapters: the order does not resolve every IP-Adapter of the spec")
    for field, named, resolved in (
        ("vae", spec.vae, order.vae),
        ("video.motionAdapter", spec.video and spec.video.motion_adapter, order.motion_adapter),
        ("upscale.model", spec.upscale, order.upscaler),
        ("restoreFaces.model", spec.restore_faces, order.restorer),
        ("removeBackground.model", spec.remove_background, order.background_remover),
    ):
        if (named is None) != (resolved is None):
            problems.append(f"{field}: the order does not match the spec")
    if problems:
        raise RunFailedError(Reason.INVALID_SPEC, "; ".join(problems))
