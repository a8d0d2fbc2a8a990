"""sidrec.analysis: bad-case analysis, plots, report, optimization strategies."""
