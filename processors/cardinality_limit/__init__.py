"""The `cardinality_limit` processor: bounded series per metric, the overflow folded so totals stay exact."""
