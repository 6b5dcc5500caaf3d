#!/usr/bin/env bash
# azd postdeploy hook (azure.yaml): subscribe each Event Grid blob trigger to the storage account's system topic.
# One subscription per `blob_trigger(..., source="EventGrid")` in functions/ (scripts/bindings.py): BlobCreated
# only, subject filtered to the trigger's container, delivered to the blobs extension webhook. Runs after the
# code is deployed because the webhook's `blobs_extension` key exists only once the host has started, and Event
# Grid validates the endpoint when the subscription is created. Safe to run again (create is a PUT).
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

key=""
for _ in $(seq 1 30); do
    key=$(az functionapp keys list -g "$AZURE_RESOURCE_GROUP" -n "$AZURE_FUNCTION_APP_NAME" \
        --query "systemKeys.blobs_extension" -o tsv 2>/dev/null || true)
    [[ -n "$key" ]] && break
    echo "postdeploy: waiting for the host to create the blobs_extension key..."
    sleep 10
done
[[ -n "$key" ]] || { echo "postdeploy: no blobs_extension system key on $AZURE_FUNCTION_APP_NAME (did the deployment start?)" >&2; exit 1; }

host=$(az functionapp show -g "$AZURE_RESOURCE_GROUP" -n "$AZURE_FUNCTION_APP_NAME" --query defaultHostName -o tsv)
python3 scripts/bindings.py eventgrid | while read -r function container; do
    name="wharf-${container}-created"
    echo "postdeploy: Event Grid subscription $name: ${container}/ BlobCreated -> $function"
    az eventgrid system-topic event-subscription create \
        -g "$AZURE_RESOURCE_GROUP" --system-topic-name "$AZURE_EVENTGRID_SYSTEM_TOPIC_NAME" -n "$name" \
        --endpoint-type webhook \
        --endpoint "https://${host}/runtime/webhooks/blobs?functionName=Host.Functions.${function}&code=${key}" \
        --included-event-types Microsoft.Storage.BlobCreated \
        --subject-begins-with "/blobServices/default/containers/${container}/" \
        --max-delivery-attempts 30 --event-ttl 1440 --output none
done
echo "postdeploy: Event Grid subscriptions in place"
