from pathlib import Path

import pytest

from llama_wizard.detect import rocminfo
from llama_wizard.detect.simulate import recorded_output
from llama_wizard.detect.tools import ToolResult

OUTPUTS = Path(__file__).resolve().parent.parent / "detect" / "profiles" / "outputs"


def test_two_mi50_agents_from_rocm_issue_1535() -> None:
    agents = rocminfo.parse(
        recorded_output("rocminfo__2x_vega20-mi50_gfx906_rocm4.2__rocm-issue-1535.txt")
    )
    assert [(a.node, a.gfx_target, a.uuid, a.bdfid) for a in agents] == [
        (1, "gfx906", "GPU-6e5e588172dc76b6", 33536),
        (2, "gfx906", "GPU-4f0a78a172e620fc", 768),
    ]
    assert all(a.vram_bytes == 16760832 * 1024 for a in agents)
    assert all(a.compute_units == 60 and a.chip_id == 0x66A1 for a in agents)
    assert agents[0].marketing_name == "Vega 20"


@pytest.mark.parametrize("path", sorted(OUTPUTS.glob("rocminfo__*.txt")), ids=lambda p: p.stem)
def test_every_recorded_rocminfo_parses(path: Path) -> None:
    agents = rocminfo.parse(recorded_output(path.name))
    if "failure" in path.name:
        assert agents == []
    else:
        assert agents, "a successful capture lists at least one GPU agent"
        for agent in agents:
            assert agent.node is not None and agent.node >= 1


def test_cpu_agents_are_not_gpus() -> None:
    text = "*******\nAgent 1\n*******\n  Name:  AMD EPYC\n  Device Type:  CPU\n  Node:  0\n"
    assert rocminfo.parse(text) == []


def test_failure_summary_is_the_first_meaningful_line() -> None:
    result = ToolResult(
        ("rocminfo",), 1, "ROCk module is NOT loaded, possibly no GPU devices\n", ""
    )
    assert rocminfo.failure_summary(result) == "ROCk module is NOT loaded, possibly no GPU devices"
