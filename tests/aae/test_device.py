"""Where training runs and in what arithmetic: subnormal floats flushed in every thread."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# A parameter whose gradients have died out: Adam's second moment would be about 1e-41, a
# subnormal float on x86's slow path. Big enough for torch to share the step among threads.
ADAM_ON_DEAD_GRADIENTS = textwrap.dedent("""
    import sys, torch
    from aae.device import flush_denormals, subnormals_flushed
    if sys.argv[1] == "flush":
        assert flush_denormals()
    assert torch.get_num_threads() == 2
    p = torch.nn.Parameter(torch.zeros(4_000_000))
    opt = torch.optim.Adam([p], fused=True)
    p.grad = torch.full_like(p, 1e-19)
    opt.step()
    state = opt.state[p]["exp_avg_sq"]
    subnormal = ((state > 0) & (state < torch.finfo(torch.float32).tiny)).sum().item()
    print(subnormal, (state == 0).sum().item(), subnormals_flushed())
""")


@pytest.mark.parametrize("flush", [False, True])
def test_flush_denormals_zeroes_subnormal_optimiser_state_in_every_thread(flush):
    run = subprocess.run([sys.executable, "-c", ADAM_ON_DEAD_GRADIENTS,
                          "flush" if flush else "keep"], capture_output=True, text=True,
                         timeout=120, cwd=ROOT, env={"OMP_NUM_THREADS": "2"})
    assert run.returncode == 0, run.stderr
    subnormal, zero, flushed = run.stdout.split()
    if flush:  # on the main thread and on the one torch started after the call
        assert (int(subnormal), int(zero), flushed) == (0, 4_000_000, "True")
    else:
        assert (int(subnormal), int(zero), flushed) == (4_000_000, 0, "False")
