"""sidrec: generative recommendation with semantic IDs.

Three layers, each importing only downward: ``sidrec.core`` (contracts and runtime every stage
shares), the stages (``sidrec.data``, ``sidrec.rq``, ``sidrec.sft``, ``sidrec.rl``,
``sidrec.evaluate``, ``sidrec.analysis``, ``sidrec.baselines``, ``sidrec.serve``) and
``sidrec.app`` (the command line, the pipeline, preflight, updates).
"""

__version__ = "0.1.0"
