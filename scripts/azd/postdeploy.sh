#!/usr/bin/env bash
# azd postdeploy hook (azure.yaml): subscribe each Event Grid trigger to the storage account's system topic.
# One subscription per `event_grid_trigger` in functions/ (its container from EVENT_GRID_TRIGGERS in
# shared/resources.py, read by scripts/bindings.py): BlobCreated only, subject filtered to the trigger's container,
# delivered to the function (endpoint type AzureFunction). Runs after the code is deployed because Event Grid
# validates the endpoint when the subscription is created. Safe to run again (create is a PUT).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

command -v az >/dev/null || { echo "postdeploy: the Azure CLI (az) is needed to create the Event Grid subscriptions" >&2; exit 1; }

# azd passes the environment's values to hooks; read them from azd too when run by hand.
if [[ -z "${AZURE_FUNCTION_APP_NAME:-}" ]] && command -v azd >/dev/null; then
    while IFS='=' read -r key value; do
        value="${value%\"}"; value="${value#\"}"
        export "$key=$value"
    done < <(azd env get-values)
fi
: "${AZURE_RESOURCE_GROUP:?}" "${AZURE_FUNCTION_APP_NAME:?}" "${AZURE_EVENTGRID_SYSTEM_TOPIC_NAME:?}"

app_id=$(az functionapp show -g "$AZURE_RESOURCE_GROUP" -n "$AZURE_FUNCTION_APP_NAME" --query id -o tsv)
python3 scripts/bindings.py eventgrid | while read -r function container; do
    name="wharf-${container}-created"
    echo "postdeploy: Event Grid subscription $name: ${container}/ BlobCreated -> $function"
    # Event Grid validates the endpoint on create: the function must be deployed (hence postdeploy).
    az eventgrid system-topic event-subscription create \
        -g "$AZURE_RESOURCE_GROUP" --system-topic-name "$AZURE_EVENTGRID_SYSTEM_TOPIC_NAME" -n "$name" \
        --endpoint-type azurefunction \
        --endpoint "${app_id}/functions/${function}" \
        --included-event-types Microsoft.Storage.BlobCreated \
        --subject-begins-with "/blobServices/default/containers/${container}/" \
        --max-delivery-attempts 30 --event-ttl 1440 --output none
done
echo "postdeploy: Event Grid subscriptions in place"
