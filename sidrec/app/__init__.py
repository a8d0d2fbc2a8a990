"""sidrec.app: the command line, the one-shot pipeline, preflight and continual updates; they
call the stages' public entry points and join them through saved directories."""
