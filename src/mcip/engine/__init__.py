"""The training engine, which knows nothing of the paper: the loop (:mod:`mcip.engine.loop`, its settings
and data protocol in :mod:`mcip.engine.loop_config`, its steps in :mod:`mcip.engine.trainer`, what it did in
:mod:`mcip.engine.result`), AdamW and its schedule (:mod:`mcip.engine.optim`),
checkpoints (:mod:`mcip.engine.checkpoint`), processes (:mod:`mcip.engine.distributed`), stop signals
(:mod:`mcip.engine.preempt`), logs and results (:mod:`mcip.engine.progress`) and validation on held-out
data, both sides (:mod:`mcip.engine.validate`). The stages that use it live in :mod:`mcip.stages`.
"""
