"""Results: the table, comparisons, explanations and cost."""
