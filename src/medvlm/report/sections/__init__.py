"""The kind-specific part of each run's section in the report, one module per run kind.

Every kind of :data:`medvlm.runinfo.RUN_KINDS` has a module here with ``details(run, d) -> None``; it
adds to the section dict ``d`` that :func:`medvlm.report.html._run_details` started with the facts
every run has (``d["facts"]``: (name, value) pairs, ``d["figures"]``, ``d["tables"]``, ``d["raw"]``).
A new run kind is one new module and one ``register`` line below.

>>> sorted(RUN_SECTIONS)
['calibrated', 'cnn', 'consistency', 'finetune', 'vlm']
"""

from __future__ import annotations

from medvlm.registry import Registry

RUN_SECTIONS = Registry("run kind")
RUN_SECTIONS.register("cnn", "medvlm.report.sections.cnn:details")
RUN_SECTIONS.register("vlm", "medvlm.report.sections.vlm:details")
RUN_SECTIONS.register("consistency", "medvlm.report.sections.consistency:details")
RUN_SECTIONS.register("finetune", "medvlm.report.sections.finetune:details")
RUN_SECTIONS.register("calibrated", "medvlm.report.sections.calibrated:details")
