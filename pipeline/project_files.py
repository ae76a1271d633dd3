"""The project's default folders and files (relative to the project folder; dvc.yaml names the same).

Commands take each as a flag (`pipeline.cli.arguments`); modules take it as a parameter with this
default. Imports nothing, so `vpr --help` stays instant.
"""

STUDIES_DIR = "experiments"             # study files (and tune_*.yaml tuning files)
PARAMS_FILE = "params.yaml"              # selects the profile
PREPARED_DIR = "data/prepared"          # the prepare stage's output: datasets.json with the dataset roots
RUNS_DIR = "runs"                       # run folders runs/<config hash>/ (`pipeline.runs.folder`)
TUNED_VALUES_DIR = "reports/tuning"            # tuned values: <dir>/<tuning id>/best_params.json
JOURNALS_DIR = "optuna"                 # the tunings' Optuna journal files: <dir>/<tuning id>.journal
RECORDED_PLAN_FILE = "data/sweep/plan.json"  # the plan the train stage executed
REPORTS_DIR = "reports"                 # the report stage's output
