"""The Azure Functions entry point: one DFApp, the blueprints registered. Nothing else."""

import azure.durable_functions as df

from functions import (
    activities,
    api,
    api_v1,
    delivery_status,
    intake,
    mail,
    orchestrators,
    polling,
    redelivery,
    scheduling,
    sla,
    sweep,
    transfers,
    trust,
)

app = df.DFApp()
app.register_functions(api.bp)
app.register_functions(api_v1.bp)
app.register_functions(intake.bp)
app.register_functions(orchestrators.bp)
app.register_functions(activities.bp)
app.register_functions(scheduling.bp)
app.register_functions(polling.bp)
app.register_functions(mail.bp)
app.register_functions(sweep.bp)
app.register_functions(sla.bp)
app.register_functions(trust.bp)  # secrets_expiry (#18)
app.register_functions(delivery_status.bp)
app.register_functions(transfers.bp)
app.register_functions(redelivery.bp)  # redeliveries queue (#16)
