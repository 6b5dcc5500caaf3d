// The Wharf workbook (shared, on the Application Insights resource) and a query pack with saved queries. Every
// query is a file in infra/queries/ (workbook-*.kql, saved-*.kql), checked by tests/unit/test_infra_queries.py.
param location string
param tags object = {}
param applicationInsightsId string
param queryPackName string

var workbookContent = {
  version: 'Notebook/1.0'
  items: [
    {
      type: 1
      name: 'title'
      content: {
        json: '## Wharf\nFiles and bytes per partner, job outcomes, failures, breakers, transfers, queue age and SLA misses. Saved queries (query pack "Wharf"): what happened to file X, all jobs of partner P today.'
      }
    }
    {
      type: 9
      name: 'parameters'
      content: {
        version: 'KqlParameterItem/1.0'
        parameters: [
          {
            id: 'time-range'
            version: 'KqlParameterItem/1.0'
            name: 'TimeRange'
            type: 4
            isRequired: true
            value: {
              durationMs: 86400000
            }
            typeSettings: {
              selectableValues: [
                {
                  durationMs: 3600000
                }
                {
                  durationMs: 86400000
                }
                {
                  durationMs: 604800000
                }
                {
                  durationMs: 2592000000
                }
              ]
            }
          }
        ]
      }
    }
    {
      type: 3
      name: 'files-bytes'
      content: {
        version: 'KqlItem/1.0'
        title: 'Files and bytes per partner'
        query: loadTextContent('../queries/workbook-files-bytes.kql')
        queryType: 0
        resourceType: 'microsoft.insights/components'
        timeContextFromParameter: 'TimeRange'
        visualization: 'timechart'
        size: 0
      }
    }
    {
      type: 3
      name: 'job-outcomes'
      content: {
        version: 'KqlItem/1.0'
        title: 'Job outcomes'
        query: loadTextContent('../queries/workbook-job-outcomes.kql')
        queryType: 0
        resourceType: 'microsoft.insights/components'
        timeContextFromParameter: 'TimeRange'
        visualization: 'barchart'
        size: 0
      }
    }
    {
      type: 3
      name: 'failure-reasons'
      content: {
        version: 'KqlItem/1.0'
        title: 'Top failure reasons'
        query: loadTextContent('../queries/workbook-failure-reasons.kql')
        queryType: 0
        resourceType: 'microsoft.insights/components'
        timeContextFromParameter: 'TimeRange'
        visualization: 'table'
        size: 0
      }
    }
    {
      type: 3
      name: 'breaker-states'
      content: {
        version: 'KqlItem/1.0'
        title: 'Breaker states'
        query: loadTextContent('../queries/workbook-breaker-states.kql')
        queryType: 0
        resourceType: 'microsoft.insights/components'
        timeContextFromParameter: 'TimeRange'
        visualization: 'table'
        size: 0
      }
    }
    {
      type: 3
      name: 'transfer-throughput'
      content: {
        version: 'KqlItem/1.0'
        title: 'Transfer throughput'
        query: loadTextContent('../queries/workbook-transfer-throughput.kql')
        queryType: 0
        resourceType: 'microsoft.insights/components'
        timeContextFromParameter: 'TimeRange'
        visualization: 'timechart'
        size: 0
      }
    }
    {
      type: 3
      name: 'queue-age'
      content: {
        version: 'KqlItem/1.0'
        title: 'Queue message age'
        query: loadTextContent('../queries/workbook-queue-age.kql')
        queryType: 0
        resourceType: 'microsoft.insights/components'
        timeContextFromParameter: 'TimeRange'
        visualization: 'timechart'
        size: 0
      }
    }
    {
      type: 3
      name: 'sla-misses'
      content: {
        version: 'KqlItem/1.0'
        title: 'SLA misses (expected file did not arrive)'
        query: loadTextContent('../queries/workbook-sla-misses.kql')
        queryType: 0
        resourceType: 'microsoft.insights/components'
        timeContextFromParameter: 'TimeRange'
        visualization: 'table'
        size: 0
      }
    }
  ]
  fallbackResourceIds: [
    applicationInsightsId
  ]
}

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, applicationInsightsId, 'wharf-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'Wharf'
    category: 'workbook'
    sourceId: applicationInsightsId
    serializedData: string(workbookContent)
  }
}

resource queryPack 'Microsoft.OperationalInsights/queryPacks@2019-09-01' = {
  name: queryPackName
  location: location
  tags: tags
  properties: {}
}

resource file_history 'Microsoft.OperationalInsights/queryPacks/queries@2019-09-01' = {
  parent: queryPack
  name: guid(queryPack.id, 'file-history')
  properties: {
    displayName: 'Wharf: what happened to file X'
    description: 'Every span, log line and exception of the jobs that handled a file of this name (edit fileName).'
    body: loadTextContent('../queries/saved-file-history.kql')
    related: {
      categories: [
        'applications'
      ]
      resourceTypes: [
        'microsoft.insights/components'
      ]
    }
    tags: {
      labels: [
        'wharf'
      ]
    }
  }
}

resource partner_jobs_today 'Microsoft.OperationalInsights/queryPacks/queries@2019-09-01' = {
  parent: queryPack
  name: guid(queryPack.id, 'partner-jobs-today')
  properties: {
    displayName: 'Wharf: all jobs of partner P today'
    description: 'One row per job of the partner today: first and last activity, files, failed steps, exceptions, trace id (edit partnerId).'
    body: loadTextContent('../queries/saved-partner-jobs-today.kql')
    related: {
      categories: [
        'applications'
      ]
      resourceTypes: [
        'microsoft.insights/components'
      ]
    }
    tags: {
      labels: [
        'wharf'
      ]
    }
  }
}

output workbookId string = workbook.id
output queryPackId string = queryPack.id
