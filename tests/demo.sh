#!/bin/sh
# `make demo`: the main job end to end on this machine, with a fresh software TPM.
exec /usr/bin/python3 "$(dirname "$0")/demo.py" "$@"
