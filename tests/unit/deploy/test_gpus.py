"""GPU discovery: fake inventories, NVML (through a fake module: no GPU here), visible devices."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from backends.deploy.gpus import FAKE_ENV, FakeInventoryError, GpuInfo, discover_gpus, parse_fake_inventory


def test_fake_inventory_counts_models_and_memory() -> None:
    gpus = parse_fake_inventory("2xA100-40G, 2xL40S,H100")
    assert [g.index for g in gpus] == [0, 1, 2, 3, 4]
    assert [g.model for g in gpus] == ["A100", "A100", "L40S", "L40S", "H100"]
    assert [g.memory_total_mib for g in gpus] == [40 * 1024, 40 * 1024, 48 * 1024, 48 * 1024, 80 * 1024]
    assert all(g.fake and g.driver == "fake" and g.memory_free_mib == g.memory_total_mib for g in gpus)
    assert len({g.uuid for g in gpus}) == 5
    assert all(g.uuid.startswith("GPU-fake-") for g in gpus)


def test_fake_inventory_spellings() -> None:
    assert len(parse_fake_inventory("4xH100")) == 4
    assert len(parse_fake_inventory("4XH100")) == 4
    assert len(parse_fake_inventory("4 x h100")) == 4
    assert parse_fake_inventory("1xMYCHIP-12G")[0].memory_total_mib == 12 * 1024
    assert parse_fake_inventory("1xMYCHIP-512M")[0].memory_total_mib == 512
    assert parse_fake_inventory("2xA100-80GB")[1].name == "NVIDIA A100"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("4xH100,", "empty"),
        ("0xH100", "count of 0"),
        ("4xMYSTERY", "no known memory size"),
        ("four H100", "COUNTxMODEL"),
        ("2xH100-0G", "no memory"),
    ],
)
def test_bad_fake_inventories_are_user_errors(text: str, message: str) -> None:
    with pytest.raises(FakeInventoryError, match=message) as info:
        parse_fake_inventory(text)
    assert info.value.hint is None or "H100" in info.value.hint or "24G" in info.value.hint


def test_fake_inventory_from_the_environment() -> None:
    assert [g.model for g in discover_gpus(environ={FAKE_ENV: "2xL4"})] == ["L4", "L4"]
    assert len(discover_gpus("1xH100", environ={FAKE_ENV: "2xL4"})) == 1, "the argument wins"


# -- NVML, through a stand-in module with pynvml's API (a real NVML needs a real GPU) ----------------


class FakeNvmlError(Exception):
    pass


@dataclass
class FakeMemory:
    total: int
    free: int
    used: int


class FakeNvml:
    """Labelled fake of the ``pynvml`` module: the few calls discovery makes."""

    NVMLError = FakeNvmlError

    def __init__(
        self, devices: list[dict[str, Any]], *, init_error: bool = False, bytes_strings: bool = False
    ):
        self.devices = devices
        self.init_error = init_error
        self.bytes_strings = bytes_strings
        self.shutdown_called = False

    def _s(self, text: str) -> str | bytes:
        return text.encode() if self.bytes_strings else text

    def nvmlInit(self) -> None:
        if self.init_error:
            raise FakeNvmlError("Driver Not Loaded")

    def nvmlShutdown(self) -> None:
        self.shutdown_called = True

    def nvmlSystemGetDriverVersion(self) -> str | bytes:
        return self._s("550.54.15")

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> dict[str, Any]:
        if self.devices[i].get("broken"):
            raise FakeNvmlError("GPU is lost")
        return self.devices[i]

    def nvmlDeviceGetMemoryInfo(self, h: dict[str, Any]) -> FakeMemory:
        return FakeMemory(total=h["total"], free=h["free"], used=h["total"] - h["free"])

    def nvmlDeviceGetUUID(self, h: dict[str, Any]) -> str | bytes:
        return self._s(h["uuid"])

    def nvmlDeviceGetName(self, h: dict[str, Any]) -> str | bytes:
        return self._s(h["name"])


GIB = 1024**3
H100 = {"name": "NVIDIA H100 80GB HBM3", "total": 80 * GIB, "free": 79 * GIB}


def devices(n: int) -> list[dict[str, Any]]:
    return [dict(H100, uuid=f"GPU-{i:08x}-aaaa") for i in range(n)]


@pytest.mark.parametrize("bytes_strings", [False, True])
def test_nvml_discovery_maps_every_field(bytes_strings: bool) -> None:
    nvml = FakeNvml(devices(2), bytes_strings=bytes_strings)
    gpus = discover_gpus(environ={}, nvml=nvml)
    assert gpus == [
        GpuInfo(0, "GPU-00000000-aaaa", "NVIDIA H100 80GB HBM3", 80 * 1024, 79 * 1024, "550.54.15"),
        GpuInfo(1, "GPU-00000001-aaaa", "NVIDIA H100 80GB HBM3", 80 * 1024, 79 * 1024, "550.54.15"),
    ]
    assert gpus[0].model == "H100 80GB HBM3"
    assert not gpus[0].fake
    assert nvml.shutdown_called


def test_no_driver_means_no_gpus_not_an_error() -> None:
    assert discover_gpus(environ={}, nvml=FakeNvml(devices(2), init_error=True)) == []


def test_a_broken_gpu_is_left_out() -> None:
    devs = devices(3)
    devs[1]["broken"] = True
    assert [g.index for g in discover_gpus(environ={}, nvml=FakeNvml(devs))] == [0, 2]


def test_cuda_visible_devices_of_the_daemon_restricts_discovery() -> None:
    nvml = FakeNvml(devices(4))
    assert [g.index for g in discover_gpus(environ={"CUDA_VISIBLE_DEVICES": "3,1"}, nvml=nvml)] == [1, 3]
    assert [g.index for g in discover_gpus(environ={"CUDA_VISIBLE_DEVICES": "GPU-00000002"}, nvml=nvml)] == [
        2
    ]
    assert discover_gpus(environ={"CUDA_VISIBLE_DEVICES": ""}, nvml=nvml) == []
    assert discover_gpus(environ={"CUDA_VISIBLE_DEVICES": "-1"}, nvml=nvml) == []
    # like CUDA, the list stops at the first entry that names no device
    assert [g.index for g in discover_gpus(environ={"CUDA_VISIBLE_DEVICES": "0,9,2"}, nvml=nvml)] == [0]


@pytest.mark.skipif(Path("/dev/nvidiactl").exists(), reason="this machine has an NVIDIA driver")
def test_real_discovery_on_a_machine_without_gpus_is_empty() -> None:
    # with or without pynvml installed: no library or no driver is not an error
    assert discover_gpus(environ={}) == []
    if importlib.util.find_spec("pynvml") is not None:
        import pynvml

        with pytest.raises(pynvml.NVMLError):
            pynvml.nvmlInit()
