"""The project's default folders and files (relative to the project folder; dvc.yaml names the same).

Commands take each as a flag (`pipeline.cli.arguments`); modules take it as a parameter with this
default. Imports nothing, so `vpr --help` stays instant.
"""

STUDIES = "experiments"             # study files (and tune_*.yaml tuning files)
PARAMS = "params.yaml"              # selects the profile
PREPARED = "data/prepared"          # the prepare stage's output: datasets.json with the dataset roots
RUNS = "runs"                       # run folders runs/<config hash>/ (`pipeline.runs.folder`)
TUNED = "reports/tuning"            # tuned values: <dir>/<tuning id>/best_params.json
JOURNALS = "optuna"                 # the tunings' Optuna journal files: <dir>/<tuning id>.journal
RECORDED_PLAN = "data/sweep/plan.json"  # the plan the train stage executed
REPORTS = "reports"                 # the report stage's output
