"""From the per-step records to the answer: metrics, tables, plots, recommendations and the report page."""
