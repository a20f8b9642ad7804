"""`python -m official_resnet.demo`: `./run.sh demo` (official_resnet/demo/__init__.py)."""
from official_resnet.demo import main

main()
