//! How a pipeline is declared: `[[pipelines]]` in the settings, by name, and the
//! checks made when the settings load (each error names the pipeline and its key).
//!
//! ```toml
//! [[pipelines]]
//! name = "orders_silver"
//! type = "upsert"
//! source = "bronze.orders"
//! target = "silver.orders"
//! keys = ["order_id"]
//! sequence_by = "seq"            # an older event never overwrites a newer row
//! delete_when = "op = 'D'"       # such an event deletes its key
//! except_columns = ["op"]        # source columns not carried to the target
//! rename = { amount = "amount_usd" }
//! derived = { amount_cents = "CAST(amount * 100 AS BIGINT)" }
//! schedule = { every = "5m" }    # or on_commit = true
//! ```
//!
//! What needs the tables themselves (a key the source does not have, a table the
//! catalog does not know) is checked by [`crate::pipeline::check_against_tables`]
//! when the service starts; what needs only the text is checked here.

use std::collections::{BTreeMap, HashMap, HashSet};

use bytesize::ByteSize;
use deltalake::datafusion::sql::parser::DFParser;
use deltalake::datafusion::sql::sqlparser::dialect::GenericDialect;
use deltalake::datafusion::sql::sqlparser::parser::Parser;
use sediment_catalog::Schedule;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::pipeline::rules::RuleSpec;

/// What a pipeline does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PipelineType {
    /// Change events from one source upserted into a target by key (bronze to silver).
    Upsert,
    /// A SQL query over source tables written to a target (silver to gold).
    Sql,
}

/// How a sql pipeline writes its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SqlWriteMode {
    /// Recompute the target partitions whose source rows changed and replace them.
    #[default]
    OverwritePartitions,
    /// Merge the query's rows into the target on `keys`.
    Merge,
}

/// One pipeline, as declared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// Its name (letters, digits, `_` and `-`): in the CLI, the `txn` application ids
    /// of its target commits and the lineage.
    pub name: String,
    #[serde(rename = "type")]
    pub kind: PipelineType,
    /// The source table (catalog name) of an upsert pipeline.
    #[serde(default)]
    pub source: Option<String>,
    /// The source tables of a sql pipeline (catalog names as the query names them).
    #[serde(default)]
    pub sources: Vec<String>,
    /// The target table (catalog name). A target that does not exist yet is created by
    /// the first run at the location `[[tables]]` gives it, and registered.
    pub target: String,
    /// Key columns (in the target's names): an upsert's merge key; a sql pipeline's
    /// merge key with `write = "merge"`.
    #[serde(default)]
    pub keys: Vec<String>,
    /// The column that orders change events (target name): the newest event per key
    /// wins, and an event older than the target's row changes nothing.
    #[serde(default)]
    pub sequence_by: Option<String>,
    /// Without `sequence_by`: the column whose largest value wins among duplicates of a
    /// key (later source commits win ties). Without either, the latest source commit wins.
    #[serde(default)]
    pub dedupe_by: Option<String>,
    /// A SQL condition over a source row: true deletes its key.
    #[serde(default)]
    pub delete_when: Option<String>,
    /// The source columns carried to the target (default: all of them).
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// Source columns not carried to the target.
    #[serde(default)]
    pub except_columns: Vec<String>,
    /// Source column to target column names.
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    /// Derived target columns: name to a SQL expression over the source row.
    #[serde(default)]
    pub derived: BTreeMap<String, String>,
    /// Keep history (SCD type 2) instead of updating rows in place.
    #[serde(default)]
    pub scd2: Option<Scd2Spec>,
    /// The query of a sql pipeline.
    #[serde(default)]
    pub query: Option<String>,
    /// How a sql pipeline writes.
    #[serde(default)]
    pub write: SqlWriteMode,
    /// Partition columns of a target the first run creates.
    #[serde(default)]
    pub partition_by: Vec<String>,
    /// Source versions one run consumes at most.
    #[serde(default)]
    pub max_source_versions: Option<u64>,
    /// Bytes of added source files one run reads at most (at least one commit is read).
    #[serde(default)]
    pub max_bytes: Option<ByteSize>,
    /// When the daemon runs it.
    #[serde(default)]
    pub schedule: Option<Schedule>,
    /// Whether the daemon runs it when a source commits (it polls the sources' logs).
    #[serde(default)]
    pub on_commit: bool,
    /// Data-quality rules on the rows a run writes.
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
}

/// SCD type 2 columns of an upsert pipeline's target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scd2Spec {
    /// The source column whose value a row version starts at, which orders a key's
    /// events (default: `sequence_by`).
    #[serde(default)]
    pub effective_at: Option<String>,
    /// The columns whose change opens a new version (default: every column but the
    /// keys and `effective_at`); a change of another column updates the open version
    /// in place.
    #[serde(default)]
    pub track_columns: Vec<String>,
    #[serde(default = "default_valid_from")]
    pub valid_from: String,
    #[serde(default = "default_valid_to")]
    pub valid_to: String,
    #[serde(default = "default_current")]
    pub current: String,
}

fn default_valid_from() -> String {
    "valid_from".into()
}
fn default_valid_to() -> String {
    "valid_to".into()
}
fn default_current() -> String {
    "is_current".into()
}

impl PipelineSpec {
    /// The column that orders an SCD type 2 pipeline's versions (`None`: not one).
    pub fn effective_at(&self) -> Option<&str> {
        self.scd2.as_ref().and_then(|s| s.effective_at.as_deref().or(self.sequence_by.as_deref()))
    }

    /// Whether the pipeline keeps tombstones: an upsert ordered by `sequence_by` (the
    /// newest delete per key) or an SCD type 2 one (every delete, which late events'
    /// versions may end at).
    pub fn keeps_tombstones(&self) -> bool {
        self.kind == PipelineType::Upsert && (self.sequence_by.is_some() || self.scd2.is_some())
    }

    /// Every source's catalog name.
    pub fn source_tables(&self) -> Vec<&str> {
        match self.kind {
            PipelineType::Upsert => self.source.iter().map(String::as_str).collect(),
            PipelineType::Sql => self.sources.iter().map(String::as_str).collect(),
        }
    }

    /// The Delta `txn` application id that records what it consumed of `source`.
    pub fn app_id(&self, source: &str) -> String {
        format!("sediment-pipeline:{}:{}", self.name, source)
    }

    /// The target column a source column becomes (`None`: not carried).
    pub fn target_column<'a>(&'a self, source_column: &'a str) -> Option<&'a str> {
        if self.except_columns.iter().any(|c| c == source_column) {
            return None;
        }
        if let Some(columns) = &self.columns
            && !columns.iter().any(|c| c == source_column)
        {
            return None;
        }
        Some(self.rename.get(source_column).map(String::as_str).unwrap_or(source_column))
    }

    /// Check what can be checked from the text alone; errors name the pipeline and key.
    pub fn validate(&self) -> Result<()> {
        let err = |key: &str, msg: String| Error::invalid(format!("pipeline {}: {key}: {msg}", self.name));
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 128
            && self.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !name_ok {
            return Err(Error::invalid(format!(
                "pipelines: name {:?}: letters, digits, _ and - only, 1 to 128 characters",
                self.name
            )));
        }
        for table in self.source_tables().into_iter().chain([self.target.as_str()]) {
            sediment_catalog::validate_table_name(table).map_err(|e| err("tables", e.to_string()))?;
        }
        if self.source_tables().contains(&self.target.as_str()) {
            return Err(err("target", format!("{} is also a source", self.target)));
        }
        match self.kind {
            PipelineType::Upsert => {
                if self.source.is_none() {
                    return Err(err("source", "an upsert pipeline needs its source table".into()));
                }
                if !self.sources.is_empty() || self.query.is_some() {
                    return Err(err("sources", "sources and query belong to sql pipelines".into()));
                }
                if self.keys.is_empty() {
                    return Err(err("keys", "an upsert pipeline needs at least one key column".into()));
                }
                if self.sequence_by.is_some() && self.dedupe_by.is_some() {
                    return Err(err("dedupe_by", "give sequence_by or dedupe_by, not both".into()));
                }
                if let Some(scd2) = &self.scd2 {
                    match (&scd2.effective_at, &self.sequence_by) {
                        (None, None) => {
                            return Err(err(
                                "scd2",
                                "give scd2.effective_at (or sequence_by) to order the versions".into(),
                            ));
                        }
                        (Some(e), Some(s)) if e != s => {
                            return Err(err(
                                "scd2",
                                format!("effective_at {e:?} and sequence_by {s:?} differ: give one"),
                            ));
                        }
                        _ => {}
                    }
                    if self.dedupe_by.is_some() {
                        return Err(err(
                            "dedupe_by",
                            "an SCD type 2 pipeline keeps every version: no dedupe_by".into(),
                        ));
                    }
                    let own = [&scd2.valid_from, &scd2.valid_to, &scd2.current];
                    if own.iter().collect::<HashSet<_>>().len() < 3 {
                        return Err(err("scd2", "valid_from, valid_to and current need three names".into()));
                    }
                }
                for (key, expr) in self
                    .delete_when
                    .iter()
                    .map(|e| ("delete_when", e))
                    .chain(self.derived.values().map(|e| ("derived", e)))
                {
                    parse_expression(expr).map_err(|e| err(key, e))?;
                }
                let mut targets = HashSet::new();
                for column in self.rename.values().chain(self.derived.keys()) {
                    if !targets.insert(column) {
                        return Err(err("rename", format!("two columns would be named {column:?}")));
                    }
                }
            }
            PipelineType::Sql => {
                let Some(query) = &self.query else {
                    return Err(err("query", "a sql pipeline needs its query".into()));
                };
                if self.source.is_some() {
                    return Err(err("source", "a sql pipeline names its tables in sources".into()));
                }
                if self.sources.is_empty() {
                    return Err(err("sources", "a sql pipeline needs at least one source table".into()));
                }
                let named = parse_query(query).map_err(|e| err("query", e))?;
                for table in &named {
                    if !self.sources.iter().any(|s| s == table) {
                        return Err(err(
                            "query",
                            format!("it reads {table}, which is not one of its sources {:?}", self.sources),
                        ));
                    }
                }
                if self.write == SqlWriteMode::Merge && self.keys.is_empty() {
                    return Err(err("keys", "write = \"merge\" needs key columns".into()));
                }
                if self.write == SqlWriteMode::OverwritePartitions && self.partition_by.is_empty() {
                    return Err(err(
                        "partition_by",
                        "write = \"overwrite_partitions\" needs the target's partition columns".into(),
                    ));
                }
            }
        }
        if self.max_source_versions == Some(0) {
            return Err(err("max_source_versions", "at least 1".into()));
        }
        if self.max_bytes.is_some_and(|b| b.as_u64() == 0) {
            return Err(err("max_bytes", "above zero".into()));
        }
        if let Some(schedule) = &self.schedule {
            schedule.validate("schedule").map_err(|e| err("schedule", e.to_string()))?;
        }
        let mut rule_names = HashSet::new();
        for (i, rule) in self.rules.iter().enumerate() {
            rule.validate().map_err(|e| err(&format!("rules[{i}]"), e))?;
            if !rule_names.insert(rule.name()) {
                return Err(err(&format!("rules[{i}]"), format!("a second rule named {:?}", rule.name())));
            }
        }
        Ok(())
    }
}

/// Check every pipeline and the graph they form: unique names, each target written by
/// one pipeline, no cycle.
pub fn validate_pipelines(pipelines: &[PipelineSpec]) -> Result<()> {
    let mut names = HashSet::new();
    let mut writers: HashMap<&str, &str> = HashMap::new();
    for p in pipelines {
        p.validate()?;
        if !names.insert(p.name.as_str()) {
            return Err(Error::invalid(format!("pipelines: two pipelines named {}", p.name)));
        }
        if let Some(other) = writers.insert(p.target.as_str(), p.name.as_str()) {
            return Err(Error::invalid(format!(
                "pipeline {}: target {} is already written by pipeline {other}",
                p.name, p.target
            )));
        }
    }
    // A cycle: going upstream from a pipeline (to the writers of its sources) leads
    // back to it.
    let by_target: HashMap<&str, &PipelineSpec> = pipelines.iter().map(|p| (p.target.as_str(), p)).collect();
    for start in pipelines {
        let mut stack: Vec<Vec<&str>> = vec![vec![start.name.as_str()]];
        let mut seen = HashSet::new();
        while let Some(path) = stack.pop() {
            let last = pipelines.iter().find(|p| Some(&p.name.as_str()) == path.last()).unwrap_or(start);
            for source in last.source_tables() {
                let Some(upstream) = by_target.get(source) else { continue };
                let mut next = path.clone();
                next.push(upstream.name.as_str());
                if upstream.name == start.name {
                    return Err(Error::invalid(format!(
                        "pipeline {}: a cycle between pipelines: {} (each reads the next one's target)",
                        start.name,
                        next.join(" <- ")
                    )));
                }
                if seen.insert(upstream.name.as_str()) {
                    stack.push(next);
                }
            }
        }
    }
    Ok(())
}

/// Parse one SQL expression, or say why it does not parse.
pub(crate) fn parse_expression(expr: &str) -> std::result::Result<(), String> {
    Parser::new(&GenericDialect {})
        .try_with_sql(expr)
        .and_then(|mut p| p.parse_expr())
        .map(|_| ())
        .map_err(|e| format!("{expr:?} is not a SQL expression: {e}"))
}

/// Parse a query (one SELECT statement) and list the `namespace.table` names it reads.
pub(crate) fn parse_query(query: &str) -> std::result::Result<Vec<String>, String> {
    let statements = DFParser::parse_sql(query).map_err(|e| format!("does not parse: {e}"))?;
    if statements.len() != 1 {
        return Err(format!("one SELECT statement, found {}", statements.len()));
    }
    let deltalake::datafusion::sql::parser::Statement::Statement(statement) = &statements[0] else {
        return Err("a SELECT statement, found another kind".into());
    };
    let deltalake::datafusion::sql::sqlparser::ast::Statement::Query(query) = statement.as_ref() else {
        return Err(format!("a SELECT statement, found {statement}"));
    };
    let mut tables = Vec::new();
    let ctes: HashSet<String> =
        query.with.iter().flat_map(|w| w.cte_tables.iter().map(|c| c.alias.name.value.clone())).collect();
    let _ = deltalake::datafusion::sql::sqlparser::ast::visit_relations(query.as_ref(), |relation| {
        let name = relation.0.iter().map(|part| part.to_string().trim_matches('"').to_string()).collect::<Vec<_>>();
        let name = name.join(".");
        if !ctes.contains(&name) && !tables.contains(&name) {
            tables.push(name);
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    Ok(tables)
}
