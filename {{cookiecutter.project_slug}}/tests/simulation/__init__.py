"""The seeded simulation of the whole pipeline (README "Simulation"): `make simulate`.

engine.py runs one seed; broker.py is the simulated broker; world.py builds the services;
faults.py lists the faults (and KNOWN_FAULTS, those the code still fails); seeds.py says
which seeds `make test` runs; test_simulation.py is that short run.
"""
