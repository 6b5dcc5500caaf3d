// The Event Grid system topic on the storage account. Its subscriptions (one per Event Grid blob trigger:
// drop/ -> intake_drop, outbound/ -> the outbound trigger; BlobCreated only, filtered by container prefix)
// point at the blobs extension webhook, whose URL carries the `blobs_extension` system key. That key exists
// only once the app's code runs, and Event Grid validates the endpoint when a subscription is created, so the
// subscriptions are made after deployment by scripts/azd/postdeploy.sh (the pattern of the azd Event Grid
// blob template), from the triggers declared in functions/ (scripts/bindings.py).
param name string
param location string
param tags object = {}
param storageAccountName string

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource systemTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: name
  location: location
  tags: tags
  properties: {
    source: storage.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

output name string = systemTopic.name
output id string = systemTopic.id
