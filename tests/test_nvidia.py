import pytest

from llama_wizard.detect import nvidia
from llama_wizard.detect.simulate import recorded_output
from llama_wizard.detect.tools import ToolResult

MIB = 1024 * 1024


def test_query_asks_for_compute_cap_and_retry_does_not() -> None:
    assert "compute_cap" in nvidia.query_argv()[1]
    assert "compute_cap" not in nvidia.query_argv(with_compute_cap=False)[1]
    assert nvidia.query_argv()[2] == "--format=csv,noheader,nounits"


def test_parse_row_with_not_available_fields() -> None:
    line = (
        "0, GPU-11111111-2222-3333-4444-555555555555, NVIDIA GB10, 0000000F:01:00.0, "
        "580.95.05, [N/A], [N/A], [N/A], 12.1\n"
    )
    [gpu] = nvidia.parse(line)
    assert gpu.bus_id == "000f:01:00.0"
    assert gpu.memory_total is None and gpu.memory_free is None
    assert gpu.compute_capability == "12.1"


def test_parse_without_compute_cap_column() -> None:
    line = "0, GPU-abc-123, GeForce GTX 770, 00000000:01:00.0, 470.256.02, 1998, 120, 1878\n"
    [gpu] = nvidia.parse(line, with_compute_cap=False)
    assert gpu.memory_total == 1998 * MIB and gpu.memory_used == 120 * MIB
    assert gpu.compute_capability is None


@pytest.mark.parametrize(
    "text",
    [
        "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.",
        'Field "compute_cap" is not a valid field to query.',
        "Failed to initialize NVML: Driver/library version mismatch\nNVML library version: 570.124",
        "No devices were found",
        "0, GPU-x, name, not-a-bus, 1, 2, 3, 4, 8.9",
    ],
)
def test_error_text_is_never_data(text: str) -> None:
    assert nvidia.parse(text) == []


@pytest.mark.parametrize(
    ("file_name", "rc", "code"),
    [
        ("nvidia-smi__failure_couldnt-communicate__gcp-compute-gpu-installation-pr18.txt", 9,
         "nvidia_driver_not_running"),
        ("nvidia-smi__failure_modprobe-fatal-plus-couldnt-communicate__nvidia-docker-issue-365.txt",
         9, "nvidia_driver_not_running"),
        ("nvidia-smi__failure_nvml-version-mismatch_old-one-line__shine-cluster-issue-30.txt", 18,
         "nvidia_driver_mismatch"),
        ("nvidia-smi__failure_nvml-version-mismatch_with-library-version__tinygrad-ogkm-issue-47.txt",
         18, "nvidia_driver_mismatch"),
    ],
)  # fmt: skip
def test_recorded_failures_are_classified(file_name: str, rc: int, code: str) -> None:
    text = recorded_output(file_name)
    # The classification must come from the text, not just the exit status.
    for status in (rc, 255):
        failure = nvidia.classify_failure(ToolResult(("nvidia-smi",), status, text, ""))
        assert failure.code == code
        assert failure.fix


def test_unknown_failure_quotes_the_tool() -> None:
    failure = nvidia.classify_failure(
        ToolResult(("nvidia-smi",), 4, "", "Insufficient Permissions")
    )
    assert failure.code == "nvidia_smi_failed"
    assert "Insufficient Permissions" in failure.message
