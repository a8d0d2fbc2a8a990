"""sidrec.data: raw sources -> the canonical dataset directory; synthetic demo data."""
