#!/bin/sh
# Installs and builds everything msb needs from a fresh clone; safe to run again (each step skips
# what is already done). Owned by the lead; parts add their build steps as scripts under their dir.
set -eu
echo "setup: (skeleton, filled in as parts land)"
