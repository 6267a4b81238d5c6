"""Every question to nvidia-smi, against a fake nvidia-smi on PATH."""

import os
import textwrap

import pytest

from lorasweep import hardware

# answers -L and the name,driver query the way the real one does on a two-GPU machine with MIG on GPU 1;
# $FAKE_SMI_MODE makes it fail, hang or list nothing
FAKE_SMI = textwrap.dedent("""\
    #!/bin/sh
    case "$FAKE_SMI_MODE" in
        fail) echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver." >&2; exit 9;;
        hang) sleep 5;;
        empty) exit 0;;
    esac
    if [ "$1" = "-L" ]; then
        echo "GPU 0: NVIDIA H200 (UUID: GPU-11111111-2222-3333-4444-555555555555)"
        echo "GPU 1: NVIDIA A100-SXM4-80GB (UUID: GPU-66666666-2222-3333-4444-555555555555)"
        echo "  MIG 1g.10gb     Device  0: (UUID: MIG-77777777-2222-3333-4444-555555555555)"
    elif [ "$1 $2" = "--query-gpu=name,driver_version --format=csv,noheader" ]; then
        echo "NVIDIA H200, 550.54.15"
        echo "NVIDIA A100-SXM4-80GB, 550.54.15"
    else
        exit 2
    fi
    """)


@pytest.fixture
def smi(tmp_path, monkeypatch):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text(FAKE_SMI)
    (fake / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}/usr/bin{os.pathsep}/bin")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("FAKE_SMI_MODE", raising=False)
    return monkeypatch


def test_the_gpu_list_is_the_gpu_lines_of_nvidia_smi_l(smi):
    assert hardware.gpu_list() == ([
        "GPU 0: NVIDIA H200 (UUID: GPU-11111111-2222-3333-4444-555555555555)",
        "GPU 1: NVIDIA A100-SXM4-80GB (UUID: GPU-66666666-2222-3333-4444-555555555555)",
    ], None)
    assert hardware.gpu_names() == ["NVIDIA H200", "NVIDIA A100-SXM4-80GB"]


def test_names_and_driver_come_from_one_query(smi):
    assert hardware.gpus() == [{"name": "NVIDIA H200", "driver": "550.54.15"},
                               {"name": "NVIDIA A100-SXM4-80GB", "driver": "550.54.15"}]
    assert hardware.gpu_driver() == "550.54.15"


@pytest.mark.parametrize("hidden", ["", "-1"])
def test_gpus_hidden_from_this_process_are_not_its_gpus(smi, hidden):
    smi.setenv("CUDA_VISIBLE_DEVICES", hidden)
    assert hardware.gpu_names() == []
    assert len(hardware.gpu_list()[0]) == 2  # the machine still has them (an MPS daemon serves the machine)


def test_a_failing_nvidia_smi_says_why_and_finds_nothing(smi):
    smi.setenv("FAKE_SMI_MODE", "fail")
    assert hardware.gpu_list() == ([], "nvidia-smi -L failed (exit 9): NVIDIA-SMI has failed because it "
                                       "couldn't communicate with the NVIDIA driver.")
    assert (hardware.gpu_names(), hardware.gpus(), hardware.gpu_driver()) == ([], [], "")


def test_a_hanging_nvidia_smi_is_given_up_on(smi):
    smi.setenv("FAKE_SMI_MODE", "hang")
    assert hardware.gpu_list(timeout_s=0.3) == ([], "nvidia-smi -L did not answer within 0.3 s")
    assert hardware.gpus(timeout_s=0.3) == []


def test_no_gpu_listed(smi):
    smi.setenv("FAKE_SMI_MODE", "empty")
    assert hardware.gpu_list() == ([], "nvidia-smi -L lists no GPU")
    assert hardware.gpu_driver() == ""


def test_no_nvidia_smi(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert hardware.gpu_list() == ([], "nvidia-smi was not found on PATH, so no GPU could be confirmed")
    assert (hardware.gpu_names(), hardware.gpus(), hardware.gpu_driver()) == ([], [], "")
