"""The Ray executor: each variant of a run is built and scored as a Ray task; results and artifacts come back to
the driver, which then times every variant together (`core.pipeline.build.time_variants`).

The baseline is scored once by the driver and its outputs are shared with every task through Ray's object store.
Timing stays in the driver: tasks run side by side on a node's cores (and on other machines), and a speed-up is a
same-round ratio on one core, not two tasks' separate timings on whatever cores they got. Each result records the
host that built it.
"""

from __future__ import annotations

import os
import platform
import secrets
import stat
import tempfile
from pathlib import Path

from core.pipeline.build import VariantResult, build_variant, write_results
from core.io.files import write_atomic
from core.errors import BadInputError

RAY_ADDRESS_ENV = "FEATHERWEIGHT_RAY_ADDRESS"


def _build_remote(model, dataset, variant, recipe, baseline_outputs, task, baseline_selection=None):
    """Body of a Ray task: build and score one variant in a scratch directory; return results and files."""
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="fw-ray-") as tmp:
        results = build_variant(model, dataset, variant, recipe, baseline_outputs, task, Path(tmp),
                                baseline_selection=baseline_selection)
        files = {}
        for result in results:
            if result.artifact:
                files[result.artifact] = (Path(tmp) / result.artifact).read_bytes()
            for entry in (result.runtimes or {}).values():  # an edge runtime's program (a .pte) comes back too
                if entry.get("artifact"):
                    files[entry["artifact"]] = (Path(tmp) / entry["artifact"]).read_bytes()
            result.info = {**result.info, "host": platform.node(), "pid": os.getpid()}
    return results, files


def private_ray_token() -> Path | None:
    """Make the token of a local Ray runtime private to this user before Ray starts one.

    Ray (2.5x+) turns token authentication on for a local `ray.init()` and writes ~/.ray/auth_token with the
    process's umask: 0644, so any local user could read the token and submit code to the cluster. The token is
    made here instead, with Ray's own recipe (256 random bits, hex), mode 0600 in a 0700 directory; an existing
    one is narrowed to 0600. Nothing is done when Ray's auth is off (RAY_AUTH_MODE other than "token") or the token
    comes from RAY_AUTH_TOKEN; a RAY_AUTH_TOKEN_PATH file is narrowed to 0600, never created.

    Returns:
        The token file, or None when there is none to look after.
    """
    mode = os.environ.get("RAY_AUTH_MODE")
    if (mode is not None and mode.strip().lower() != "token") or os.environ.get("RAY_AUTH_TOKEN"):
        return None
    custom = os.environ.get("RAY_AUTH_TOKEN_PATH")
    path = Path(custom) if custom else Path.home() / ".ray" / "auth_token"
    if not custom:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))
            return path
    try:
        info = path.lstat()
    except FileNotFoundError:
        return None
    if stat.S_ISREG(info.st_mode) and info.st_uid == os.getuid() and info.st_mode & 0o077:
        os.chmod(path, 0o600)  # an older run of Ray wrote it readable by others
    return path


def ray_init(address: str | None = None):
    """Connect to Ray: `address`, else FEATHERWEIGHT_RAY_ADDRESS, else start a local runtime."""
    try:
        import ray
    except ImportError:
        raise BadInputError("the ray executor needs Ray: pip install -e '.[ray]'") from None
    address = address or os.environ.get(RAY_ADDRESS_ENV)
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            private_ray_token()  # before Ray writes its own, readable by every local user
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
    return ray


def run_variants_ray(model, dataset, recipe, baseline_outputs, task, out_dir: Path, result, progress, should_stop,
                     address: str | None = None, baseline_selection=None) -> bool:
    """Build and score every variant as a Ray task, appending results (in recipe order) as they finish; the
    caller times them afterwards.

    Returns:
        True when the run was cancelled.
    """
    ray = ray_init(address)
    remote = ray.remote(num_cpus=1)(_build_remote)
    shared = [ray.put(x) for x in (model, dataset, recipe, baseline_outputs, baseline_selection)]
    pending = {remote.remote(shared[0], shared[1], variant, shared[2], shared[3], task, shared[4]): (i, variant)
               for i, variant in enumerate(recipe.variants)}
    finished: dict[int, list[VariantResult]] = {}
    cancelled = False
    while pending:
        if should_stop():
            for ref in pending:
                ray.cancel(ref, force=True)
            for i, variant in pending.values():
                finished[i] = [VariantResult(variant.name, status="cancelled", error="cancelled by the user",
                                             steps=[s.to_dict() for s in variant.steps])]
            cancelled = True
            break
        done, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
        for ref in done:
            index, variant = pending.pop(ref)
            try:
                results, files = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - a task that died is a failed variant
                results, files = [VariantResult(variant.name, status="failed",
                                                error=f"Ray task failed: {str(exc).splitlines()[0][:200]}",
                                                steps=[s.to_dict() for s in variant.steps])], {}
            for relative, content in files.items():
                write_atomic(out_dir / relative, content)
            finished[index] = results
            progress.index, progress.variant = len(finished), variant.name
            for measured in results:
                progress.emit("variant_done", f"{measured.name}: {measured.status} (ray)", 1.0, measured.to_dict())
    result.variants.extend(r for i in sorted(finished) for r in finished[i])
    write_results(result, out_dir)
    return cancelled
