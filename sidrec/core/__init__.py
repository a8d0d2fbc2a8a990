"""sidrec.core: the contracts and runtime every stage shares (config, formats, metrics,
decoding, training runtime). Imports no stage."""
