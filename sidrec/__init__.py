"""sidrec: generative recommendation with semantic IDs.

Stages live in subpackages (``sidrec.data``, ``sidrec.rq``, ...); this root package holds the
command line, config loading, run manifests and the pieces every stage shares.
"""

__version__ = "0.1.0"
