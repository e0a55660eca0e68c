"""Explain measurements: fits built on the cost model (fit), measured against predicted
(compare, compare_model), the report of a results folder (report) and its plots (plotting)."""
