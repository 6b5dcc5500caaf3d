"""The Azure Functions entry point: one DFApp, the blueprints registered. Nothing else."""

import azure.durable_functions as df

from functions import api

app = df.DFApp()
app.register_functions(api.bp)
