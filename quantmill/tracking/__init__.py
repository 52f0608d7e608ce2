"""MLflow, one concern per module: `client` (where runs and registered models live),
`registry` (reading and tagging registered versions), `runs` (recording a run and
registering what passed its gate), `webhooks` (the registry webhook quantmill listens to)."""
