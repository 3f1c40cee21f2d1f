"""HTTP: /healthz, /metrics, the JSON API and the console."""
