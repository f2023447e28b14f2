"""The search: spaces per device, the Optuna objective, the study driver and samplers."""
