"""What the user asks for, as validated data: recipes, presets, job configs."""
