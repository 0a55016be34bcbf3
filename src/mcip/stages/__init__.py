"""The paper's stages (GPR-FT, MCIP, Re-A, the base model's alignment) and the WiSE-FT pipeline step, one
module each (``gpr``, ``mcip``, ``realign``, ``align``, ``wise_step``) holding its Task, its builder
``prepare_<stage>``, its defaults and validation metric, registered where defined
(:mod:`mcip.stages.registry`; :mod:`mcip.stages.catalog` imports them all).

The run's settings: :mod:`mcip.stages.config` (the typed config), :mod:`mcip.stages.resolve` (YAML,
``--set`` and per-stage defaults -> resolved configs), :mod:`mcip.stages.inputs` (what a stage reads) and
:mod:`mcip.stages.run` (stages and pipelines). What they share: :mod:`mcip.stages.common`,
:mod:`mcip.stages.features` (cached frozen-tower features), :mod:`mcip.stages.text_cache` (Re-A's cached
lower text blocks). This package imports nothing on its own, so a config module loads no model or loss.
"""
