"""The closed loop, one command: an app's traces, feedback and reviews since the last loop become a fine-tuned
candidate that is gated against production, exported to GGUF, registered and given a small A/B share.

```python
from fmstack.core.config import get_settings
from fmstack.core.store import open_store
from fmstack.loop import load_loop_config, run_loop

settings = get_settings()
result = run_loop("shop-bot", "smollm2-135m-instruct", load_loop_config(None), settings, open_store(settings),
                  lambda step, message: print(f"{step}: {message}"))
print(result.status, result.reason)   # done | stopped | gate-failed, and why
```

Steps (`runner.STEPS`): `data` (`data.py`: the gate suite from reviews, SFT/DPO files from traces since the last
completed loop, held-out answers kept out of training), `finetune` (`train.py`: LoRA SFT, then DPO), `export`
(`ship.py`: GGUF quantized by llama.cpp), `gate` (`gate.py`: the GGUF against the production variant, eval runs
compared with a paired bootstrap), `register` and `ab` (`ship.py`). Each step's output is committed to
`loop_runs` as it finishes (`runs.py`), so a killed run says where it stopped and `--resume` continues it.

Layer: between `fmstack.cli` and `fmstack.server`; it is the one place that joins `fmstack.app` (review, eval,
A/B) and `fmstack.model` (data, training, export), which do not import each other.
"""

from fmstack.loop.config import LoopConfig, LoopConfigError, load_loop_config
from fmstack.loop.runner import STEPS, LoopResult, run_loop
from fmstack.loop.runs import LoopRuns, RunInfo

__all__ = [
    "STEPS",
    "LoopConfig",
    "LoopConfigError",
    "LoopResult",
    "LoopRuns",
    "RunInfo",
    "load_loop_config",
    "run_loop",
]
