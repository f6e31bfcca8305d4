"""GPU discovery: what this host has, from NVML, or from a fake inventory for tests.

Why NVML (``pynvml``, from the ``nvidia-ml-py`` package) and not ``nvidia-smi`` or CUDA: it is
the driver's own API, needs no CUDA runtime in the daemon, answers in milliseconds, and numbers
devices by PCI bus, which is also the order the local backend makes CUDA use
(``CUDA_DEVICE_ORDER=PCI_BUS_ID``), so a lease's ids mean the same GPUs everywhere.

It is optional: ``pynvml`` is imported inside :func:`discover_gpus`, and a host without the
package, the library or a driver simply has no GPUs. That is not an error, because CPU engines
(``sim``, ``llamacpp``) run fine there; the error comes later, from the leaser, and only for a
spec that asks for GPUs.

A *fake inventory* (``"4xH100"``, ``"2xA100-80G,2xL40S"``; argument or ``AUTOTUNER_FAKE_GPUS``)
stands in for real devices so that scheduling and leases are tested on machines with none. Fake
GPUs carry ``driver="fake"`` and ``GPU-fake-...`` uuids so a record can never pass them off as
real hardware.

The daemon's own ``CUDA_VISIBLE_DEVICES``, when set, restricts NVML discovery to those devices
(indices or UUIDs): an operator who starts the service with ``CUDA_VISIBLE_DEVICES=4,5,6,7``
means "use these four". Indices there are read in NVML's (PCI bus) order; UUIDs are unambiguous.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from specs.errors import FakeInventoryError

__all__ = ["FAKE_ENV", "FakeInventoryError", "GpuInfo", "discover_gpus", "parse_fake_inventory"]

log = logging.getLogger(__name__)

FAKE_ENV = "AUTOTUNER_FAKE_GPUS"
_MIB = 1024 * 1024

#: memory (MiB) of common data-centre GPUs, for fake inventories given without a size
KNOWN_MODELS_MIB: dict[str, int] = {
    "B200": 183 * 1024,
    "H200": 141 * 1024,
    "H100": 80 * 1024,
    "H800": 80 * 1024,
    "H20": 96 * 1024,
    "GH200": 96 * 1024,
    "A100": 80 * 1024,
    "A800": 80 * 1024,
    "L40S": 48 * 1024,
    "L40": 48 * 1024,
    "A40": 48 * 1024,
    "A6000": 48 * 1024,
    "L4": 24 * 1024,
    "A10G": 24 * 1024,
    "A10": 24 * 1024,
    "RTX4090": 24 * 1024,
    "V100": 32 * 1024,
    "T4": 16 * 1024,
}

_ITEM = re.compile(
    r"^(?:(?P<count>\d+)\s*[xX*]\s*)?(?P<model>[A-Za-z][A-Za-z0-9]*?)(?:-(?P<mem>\d+)\s*(?P<unit>G|GB|GiB|M|MiB)?)?$",
)


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as discovered. ``index`` is the NVML (PCI bus order) index, used in leases."""

    index: int
    uuid: str
    name: str
    memory_total_mib: int
    memory_free_mib: int
    driver: str

    @property
    def fake(self) -> bool:
        return self.driver == "fake"

    @property
    def model(self) -> str:
        """What "same model" means for leases: the marketing name without the vendor prefix."""
        return self.name.removeprefix("NVIDIA ").strip()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def discover_gpus(
    fake: str | None = None, *, environ: Mapping[str, str] | None = None, nvml: Any = None
) -> list[GpuInfo]:
    """The GPUs this process may use, in index order.

    ``fake`` (or, when it is ``None``, ``$AUTOTUNER_FAKE_GPUS``) selects a fake inventory.
    Otherwise NVML is asked; ``nvml`` injects a module with pynvml's API (tests). No pynvml, no
    library or no driver gives ``[]``. A device that fails to answer is skipped with a warning
    rather than failing discovery as a whole. Raises :class:`FakeInventoryError` for a bad fake
    inventory.
    """
    env = os.environ if environ is None else environ
    if fake is None:
        fake = env.get(FAKE_ENV) or None
    if fake is not None:
        # explicit, so not filtered by CUDA_VISIBLE_DEVICES: a test asks for exactly what it gets
        return parse_fake_inventory(fake)
    return _apply_visible_devices(_discover_nvml(nvml), env.get("CUDA_VISIBLE_DEVICES"))


def parse_fake_inventory(text: str) -> list[GpuInfo]:
    """``"4xH100"``, ``"2xA100-80G,2xL40S"``, ``"L4"``, ``"3xMYCHIP-12G"`` → fake GPUs.

    Items are ``[COUNT x]MODEL[-MEMORY[G|M]]`` separated by commas; memory defaults to the
    model's usual size (unknown models must give one). Indices run in order of the items.
    """
    items = [t.strip() for t in text.split(",")]
    if not text.strip() or any(not t for t in items):
        raise FakeInventoryError(
            f"fake GPU inventory {text!r} is empty or has an empty item",
            hint="write it like '4xH100' or '2xA100-80G,2xL40S'",
        )
    gpus: list[GpuInfo] = []
    for item in items:
        m = _ITEM.match(item)
        if m is None:
            raise FakeInventoryError(
                f"fake GPU inventory item {item!r} is not COUNTxMODEL[-MEMORY]",
                hint="for example '4xH100', '2xA100-40G' or '1xL4'",
            )
        count = int(m["count"]) if m["count"] is not None else 1
        if count < 1:
            raise FakeInventoryError(f"fake GPU inventory item {item!r} has a count of {count}")
        model = m["model"].upper()
        if m["mem"] is not None:
            mem = int(m["mem"])
            unit = (m["unit"] or "G").upper()
            mib = mem if unit.startswith("M") else mem * 1024
        elif model in KNOWN_MODELS_MIB:
            mib = KNOWN_MODELS_MIB[model]
        else:
            raise FakeInventoryError(
                f"fake GPU model {m['model']!r} has no known memory size",
                hint=f"give it, e.g. '{count}x{m['model']}-24G'; "
                f"known models: {', '.join(sorted(KNOWN_MODELS_MIB))}",
            )
        if mib <= 0:
            raise FakeInventoryError(f"fake GPU inventory item {item!r} has no memory")
        for _ in range(count):
            index = len(gpus)
            gpus.append(
                GpuInfo(
                    index=index,
                    uuid=f"GPU-fake-{index:04d}-{model.lower()}",
                    name=f"NVIDIA {model}",
                    memory_total_mib=mib,
                    memory_free_mib=mib,
                    driver="fake",
                )
            )
    return gpus


def _text(value: str | bytes) -> str:
    # pynvml returned bytes before nvidia-ml-py 11.515; newer versions return str
    return value.decode() if isinstance(value, bytes) else value


def _discover_nvml(module: Any = None) -> list[GpuInfo]:
    nvml = module
    if nvml is None:
        try:
            import pynvml
        except ImportError:
            log.debug("pynvml is not installed (pip install 'autotuner[nvml]'): no GPU discovery")
            return []
        nvml = pynvml
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        log.info("no NVIDIA GPUs usable (NVML: %s); only CPU engines can run", exc)
        return []
    try:
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        gpus = []
        for i in range(nvml.nvmlDeviceGetCount()):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(i)
                mem = nvml.nvmlDeviceGetMemoryInfo(handle)
                gpus.append(
                    GpuInfo(
                        index=i,
                        uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
                        name=_text(nvml.nvmlDeviceGetName(handle)),
                        memory_total_mib=int(mem.total) // _MIB,
                        memory_free_mib=int(mem.free) // _MIB,
                        driver=driver,
                    )
                )
            except nvml.NVMLError as exc:
                # a GPU that fell off the bus or is in a bad state: skip it, keep the others
                log.warning("GPU %d does not answer NVML (%s); leaving it out", i, exc)
        return gpus
    except nvml.NVMLError as exc:
        log.warning("GPU discovery failed (NVML: %s); only CPU engines can run", exc)
        return []
    finally:
        with contextlib.suppress(nvml.NVMLError):
            nvml.nvmlShutdown()


def _apply_visible_devices(gpus: list[GpuInfo], visible: str | None) -> list[GpuInfo]:
    """Keep the GPUs named in ``CUDA_VISIBLE_DEVICES`` (indices or UUID prefixes), in index order.

    Unset means all. CUDA stops at the first entry it cannot resolve, and so does this.
    """
    if visible is None:
        return gpus
    keep: set[int] = set()
    for entry in (e.strip() for e in visible.split(",")):
        if not entry:
            break
        match = None
        if entry.isdigit():
            match = next((g for g in gpus if g.index == int(entry)), None)
        else:
            candidates = [g for g in gpus if g.uuid.startswith(entry)]
            match = candidates[0] if len(candidates) == 1 else None
        if match is None:
            break
        keep.add(match.index)
    return [g for g in gpus if g.index in keep]
