"""Which engines an export builds, with which TensorRT flavour, and what it records for those it cannot.

An export plans an engine of each flavour for each ONNX file that TensorRT builds. A flavour that can build
here builds its engines; the ones a GPU here can also run are verified at once, the others are recorded as
built, not yet verified on a GPU. A flavour that cannot build here is recorded as skipped, with the reason and
the commands that finish the job where it can. Everything that can be refused is refused before any work.

Compute capabilities are planned per engine: an engine of a precision that not every GPU runs (FP8: 8.9 and later)
is built for those of its flavour's capabilities that run it, and asking for it with one that does not is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from ..artifacts import MIN_COMPUTE_CAPABILITY, ArtifactKind, engine_kind, engine_source, precision_capabilities
from ..errors import BackendUnavailableError, InputError
from ..manifest import EngineStatus
from ..tensorrt.builder import BuildOptions, trtexec_command
from ..tensorrt.capabilities import target_capabilities
from ..tensorrt.flavours import FLAVOURS, TENSORRT, TENSORRT_RTX, Flavour, current_compute_capability, flavour
from ..tensorrt.rtx import supported_capabilities

TIMING_CACHE_NAME = "timing.cache"  # TensorRT's timing cache, reused by the next build in the folder


@dataclass(frozen=True)
class FlavourPlan:
    """One flavour's part of an export: the engines it plans, and what it can do with them here."""

    flavour: Flavour
    engines: tuple[ArtifactKind, ...]
    unavailable: str | None  # why the engines cannot be built here; None: they are built
    verifiable: bool  # a GPU here runs the flavour's engines: each is verified right after its build
    capabilities: tuple[str, ...]  # the compute capabilities the engines are built for (empty when not built)

    @property
    def builds(self) -> bool:
        return self.unavailable is None

    def capabilities_of(self, engine: ArtifactKind) -> tuple[str, ...]:
        """The compute capabilities ``engine`` is built for: the flavour's, less those whose GPUs do not run its
        precision (a TensorRT-for-RTX FP8 engine: 8.9, 12.0, 12.1)."""
        return precision_capabilities(engine.precision, self.capabilities)

    def verifies(self, engine: ArtifactKind) -> bool:
        """Whether the GPU here runs ``engine``, so it is verified right after its build."""
        return self.verifiable and current_compute_capability() in self.capabilities_of(engine)


def plan_engines(
    sources: list[ArtifactKind],
    flavours: tuple[str, ...] | None,
    build: BuildOptions,
    *,
    require_engine: bool = False,
) -> list[FlavourPlan]:
    """The engine plan of an export writing ``sources``, refused before any work where it cannot be met.

    ``flavours`` None plans every flavour and builds with those that can build here (the others are recorded as
    skipped); named flavours must all build here. ``require_engine`` asks for at least one engine built here.
    Compute capabilities (``build.compute_capabilities``) are TensorRT for RTX's and checked against what the
    installed library can build for.
    """
    chosen = [flavour(name) for name in dict.fromkeys(flavours)] if flavours is not None else list(FLAVOURS.values())
    sources = [s for s in sources if s.builds_engines]
    if not sources or not chosen:
        if require_engine:
            raise InputError("no engine is planned: ask for at least one TensorRT flavour", parameter="flavours")
        return []
    plans = []
    for candidate in chosen:
        unavailable = candidate.build_unavailable()
        if unavailable and flavours is not None:
            raise BackendUnavailableError(f"cannot build {candidate.title} engines here: {unavailable}",
                                          parameter="flavours")
        capabilities = () if unavailable else target_capabilities(
            candidate, build.compute_capabilities if candidate is TENSORRT_RTX else None)
        plan = FlavourPlan(candidate, tuple(engine_kind(s, candidate) for s in sources), unavailable,
                           not unavailable and candidate.run_unavailable() is None, capabilities)
        if plan.builds:
            _check_precisions(plan, build.compute_capabilities if candidate is TENSORRT_RTX else None)
        plans.append(plan)
    if build.compute_capabilities is not None and not any(p.flavour is TENSORRT_RTX and p.builds for p in plans):
        rtx = next((p for p in plans if p.flavour is TENSORRT_RTX), None)
        why = rtx.unavailable if rtx else "it is not among the flavours asked for"
        raise InputError(f"compute capabilities choose the GPUs of {TENSORRT_RTX.title} engines, which are not "
                         f"built here: {why}", parameter="compute_capabilities")
    if require_engine and not any(p.builds for p in plans):
        reasons = "; ".join(f"{p.flavour.title}: {p.unavailable}" for p in plans)
        raise BackendUnavailableError(f"no TensorRT engine can be built here ({reasons})",
                                      parameter="require_engine")
    return plans


def _check_precisions(plan: FlavourPlan, requested: tuple[str, ...] | None) -> None:
    """Refuse an engine of a precision that some asked-for compute capability does not run (or, for TensorRT,
    that the GPU it builds on does not), naming the capabilities that run it."""
    for precision in dict.fromkeys(e.precision for e in plan.engines if e.precision in MIN_COMPUTE_CAPABILITY):
        asked = plan.capabilities if plan.flavour is TENSORRT else requested
        lacking = [c for c in asked or () if c not in precision_capabilities(precision, (c,))]
        if not lacking:
            continue
        title = precision.upper()
        if plan.flavour is TENSORRT:
            raise InputError(f"{TENSORRT.title} builds {title} engines on the GPU they run on, and this one, of "
                             f"compute capability {lacking[0]}, has no {title} (it needs "
                             f"{'.'.join(map(str, MIN_COMPUTE_CAPABILITY[precision]))} or later: L4, L40S, H100, H200, "
                             f"B200): build them on such a GPU, or leave {TENSORRT.title} out here (flavour "
                             f"{TENSORRT_RTX.name} builds {title} engines anywhere)", parameter="flavours")
        having = precision_capabilities(precision, supported_capabilities())
        raise InputError(f"{title} engines run on compute capability {', '.join(having)} only, and compute capability "
                         f"{', '.join(lacking)} was asked for: ask for {title} with those only, or export {title} "
                         "apart from the other precisions", parameter="compute_capabilities")


def engine_status(plan: FlavourPlan, image_size: int, build: BuildOptions, export_dir: Path) -> EngineStatus:
    """What the manifest says of one flavour's engines: built or skipped and why, and the commands that finish the
    job, relative to the export directory (so they stay right wherever it is copied)."""
    if build.timing_cache and build.timing_cache.resolve().parent == export_dir.resolve():
        build = replace(build, timing_cache=Path(build.timing_cache.name))
    p = build.profile
    finish = (f"smlp-export --from-onnx . --flavour {plan.flavour.name} --batch {p.min}:{p.opt}:{p.max} "
              f"--workspace {build.workspace_mib} --opt-level {build.optimization_level}")
    if plan.flavour.builds_without_gpu and plan.capabilities:
        finish += f" --compute-capability {','.join(plan.capabilities)}"
    commands = [finish]
    if plan.flavour is TENSORRT:  # trtexec builds the same engines; TensorRT for RTX's wheel ships no such tool
        commands += [trtexec_command(Path(engine_source(e.file_name).file_name), Path(e.file_name), image_size, build)
                     for e in plan.engines]
    if plan.flavour.missing():
        commands.insert(0, plan.flavour.install)
    if plan.builds and not plan.verifiable:
        commands.insert(0, "smlp-export --verify-engines .")  # on a GPU the engines run on
    status = "built" if plan.builds else "skipped"
    narrower = {e.precision.upper(): plan.capabilities_of(e) for e in plan.engines
                if plan.capabilities_of(e) != plan.capabilities}
    only = "".join(f" ({precision}: {', '.join(capabilities)})" for precision, capabilities in narrower.items())
    reason = plan.unavailable or ("" if plan.verifiable else f"for compute capability "
                                  f"{', '.join(plan.capabilities)}{only}, not yet verified on a GPU")
    if plan.builds and any(e.precision == "int8" for e in plan.engines):
        reason = "; ".join(filter(None, (reason, f"INT8: {plan.flavour.int8}")))
    return EngineStatus(plan.flavour.name, status, reason, commands, [e.file_name for e in plan.engines])
