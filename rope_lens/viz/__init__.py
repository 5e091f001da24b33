"""Plotting layer: takes DataFrames, returns plotly figures. Never touches models or tensors."""
