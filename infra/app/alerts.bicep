// Alert rules over Application Insights (scheduled query rules; queries in infra/queries/alert-*.kql) and the
// action group they notify: one e-mail receiver (alertEmail; none when empty: add receivers in the portal).
param location string
param tags object = {}
param actionGroupName string
param alertEmail string = ''
param applicationInsightsId string
@minValue(0)
param failedJobsThreshold int = 3
@minValue(5)
@maxValue(300)
param breakerOpenMinutes int = 30
@minValue(1)
param secretExpiryDays int = 14

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: actionGroupName
  location: 'Global'
  tags: tags
  properties: {
    groupShortName: 'wharf'
    enabled: true
    emailReceivers: empty(alertEmail) ? [] : [
      {
        name: 'operator'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

// The queries' tunable values are `let` lines in the .kql files, replaced here (a test checks the lines exist).
var breakerQuery = replace(loadTextContent('../queries/alert-breaker-open.kql'), 'let breakerOpenMinutes = 30;', 'let breakerOpenMinutes = ${breakerOpenMinutes};')
var secretQuery = replace(loadTextContent('../queries/alert-secret-expiry.kql'), 'let secretExpiryDays = 14;', 'let secretExpiryDays = ${secretExpiryDays};')

var rules = [
  {
    name: 'failed-jobs'
    displayName: 'Wharf: failed jobs'
    description: 'More than ${failedJobsThreshold} jobs of one partner ended FAILED in 15 minutes. Look: wharf jobs list --status failed; the workbook\'s top failure reasons.'
    severity: 2
    frequency: 'PT5M'
    window: 'PT15M'
    query: loadTextContent('../queries/alert-failed-jobs.kql')
    aggregation: 'Total'
    measure: 'failedJobs'
    threshold: failedJobsThreshold
    dimensions: [
      {
        name: 'partner'
        operator: 'Include'
        values: [
          '*'
        ]
      }
    ]
  }
  {
    name: 'poison-messages'
    displayName: 'Wharf: messages in a poison queue'
    description: 'A -poison queue holds messages (or Wharf just moved one there). Look: wharf poison list; requeue or drop after fixing the cause.'
    severity: 2
    frequency: 'PT5M'
    window: 'PT15M'
    query: loadTextContent('../queries/alert-poison-messages.kql')
    aggregation: 'Maximum'
    measure: 'messages'
    threshold: 0
    dimensions: [
      {
        name: 'queue'
        operator: 'Include'
        values: [
          '*'
        ]
      }
    ]
  }
  {
    name: 'breaker-open'
    displayName: 'Wharf: partner breaker open'
    description: 'A partner\'s circuit breaker has been open for more than ${breakerOpenMinutes} minutes: its polls and deliveries are paused. Look: the partner\'s host, credentials, allow-list of the outbound IP.'
    severity: 2
    frequency: 'PT5M'
    window: 'PT6H'
    query: breakerQuery
    aggregation: 'Count'
    measure: ''
    threshold: 0
    dimensions: [
      {
        name: 'partner'
        operator: 'Include'
        values: [
          '*'
        ]
      }
      {
        name: 'channel'
        operator: 'Include'
        values: [
          '*'
        ]
      }
    ]
  }
  {
    name: 'function-failures'
    displayName: 'Wharf: function execution failures'
    description: 'Function invocations failed in the last 15 minutes. Look: the exceptions of the failing function in Application Insights.'
    severity: 3
    frequency: 'PT5M'
    window: 'PT15M'
    query: loadTextContent('../queries/alert-function-failures.kql')
    aggregation: 'Total'
    measure: 'failures'
    threshold: 0
    dimensions: [
      {
        name: 'functionName'
        operator: 'Include'
        values: [
          '*'
        ]
      }
    ]
  }
  {
    name: 'secret-expiry'
    displayName: 'Wharf: secret or certificate expiring'
    description: 'A partner secret or certificate expires within ${secretExpiryDays} days. Rotate it in Key Vault.'
    severity: 2
    frequency: 'PT1H'
    window: 'P1D'
    query: secretQuery
    aggregation: 'Minimum'
    measure: 'expiresInDays'
    threshold: secretExpiryDays
    dimensions: [
      {
        name: 'item'
        operator: 'Include'
        values: [
          '*'
        ]
      }
    ]
  }
  {
    name: 'sla-missed'
    displayName: 'Wharf: expected file did not arrive'
    description: 'A partner\'s expected file did not arrive in its window (catalogue `expect:`). Look: wharf sla status.'
    severity: 1
    frequency: 'PT5M'
    window: 'PT15M'
    query: loadTextContent('../queries/alert-sla-missed.kql')
    aggregation: 'Total'
    measure: 'missedWindows'
    threshold: 0
    dimensions: [
      {
        name: 'partner'
        operator: 'Include'
        values: [
          '*'
        ]
      }
      {
        name: 'expectation'
        operator: 'Include'
        values: [
          '*'
        ]
      }
    ]
  }
]

resource alertRules 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = [for rule in rules: {
  name: 'wharf-${rule.name}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: rule.displayName
    description: rule.description
    severity: rule.severity
    enabled: true
    evaluationFrequency: rule.frequency
    windowSize: rule.window
    scopes: [
      applicationInsightsId
    ]
    criteria: {
      allOf: [
        {
          query: rule.query
          timeAggregation: rule.aggregation
          metricMeasureColumn: empty(rule.measure) ? null : rule.measure
          // secret-expiry fires when the days left fall to the threshold; the others when they exceed it.
          operator: rule.name == 'secret-expiry' ? 'LessThanOrEqual' : 'GreaterThan'
          threshold: rule.threshold
          dimensions: rule.dimensions
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}]

output actionGroupId string = actionGroup.id
