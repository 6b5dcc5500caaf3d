#!/usr/bin/env node
// Parse and bind KQL files with the Kusto language service against the App Insights schema; print one JSON
// object {file: [diagnostics]} on stdout. Exit 0 even when there are diagnostics: the caller (a pytest test)
// decides. Usage: node check-kql.js FILE.kql...
'use strict';
const fs = require('fs');
const path = require('path');

global.Bridge = require('@kusto/language-service-next/bridge.min.js');
require('@kusto/language-service-next/Kusto.Language.Bridge.min.js');
const K = Kusto.Language;
const S = K.Symbols;

const schema = JSON.parse(fs.readFileSync(path.join(__dirname, 'appinsights-schema.json'), 'utf8'));
const tables = Object.entries(schema.tables).map(
  ([name, columns]) => new S.TableSymbol.$ctor7(name, `(${schema.common}, ${columns})`, ''));
const globals = K.GlobalState.Default.WithDatabase(new S.DatabaseSymbol.$ctor1('appinsights', tables, false));

const result = {};
for (const file of process.argv.slice(2)) {
  const text = fs.readFileSync(file, 'utf8');
  const code = K.KustoCode.ParseAndAnalyze(text, globals);
  const diagnostics = code.GetDiagnostics();
  const out = [];
  for (let i = 0; i < diagnostics.Count; i++) {
    const d = diagnostics.getItem(i);
    const line = text.slice(0, d.Start).split('\n').length;
    out.push({ severity: String(d.Severity), code: String(d.Code), message: String(d.Message), line });
  }
  result[file] = out;
}
process.stdout.write(JSON.stringify(result));
