//! SCD type 2 upsert runs: the target keeps every version of a key, each row valid
//! from its event's `effective_at` value (`valid_from`) to the next event of the key
//! (`valid_to`, null while current; `current` marks the open version). A row's
//! `effective_at` column is its version's start.
//!
//! Out of order, as in Delta Live Tables' `STORED AS SCD TYPE 2`: a late event is put
//! into the key's history where its `effective_at` places it (the version before it
//! closes at it, it closes at the next one); a late delete ends the version it falls
//! into. An event whose tracked columns equal the open version's is absorbed: the
//! version continues (its untracked columns take the event's values) instead of a new
//! one opening. Two events of a key at the same `effective_at` are one (the later
//! source commit wins).
//!
//! A run rebuilds the history of the keys its events touch, so the result does not
//! depend on how events were split into runs: the target's rows of those keys (read
//! back as upserts at their `valid_from`; a row closed where no row of the key starts
//! is a delete there) and the pipeline's tombstones (every delete, and every absorbed
//! event and the opener of a version that absorbed one, with their own values: a late
//! event that splits a version replays them) are merged with the run's events and
//! walked in order. The tombstones' changes are committed first, then the rows that
//! differ from the target's in one merge on the keys and `valid_from` (updates,
//! inserts, and deletes of rows the new history no longer has); both carry the run's
//! `txn`, so a run killed between them is redone exactly.
//!
//! Limits: the touched keys' rows are found by a scan filtered on the first key's
//! range in the run (statistics skip other files; keys spread over the whole range
//! read the whole table); the tombstones are kept for good (no retention yet).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use deltalake::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, new_null_array};
use deltalake::arrow::compute::{cast, interleave};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deltalake::arrow::row::{RowConverter, Rows, SortField};

use crate::change::{MatchedAction, NotMatchedAction};
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::PipelineRunReport;
use crate::pipeline::rules::quote;
use crate::pipeline::spec::PipelineSpec;
use crate::pipeline::upsert::{DELETE_COLUMN, execute_merge, plain_schema, progress_options};
use crate::table::Table;
use crate::write::WriteOptions;

/// An event of one key: the run's, or one read back from the target's history.
#[derive(Clone, Copy)]
struct Event {
    /// Index into the key rows.
    key: usize,
    /// Index into the effective-time rows (and, by [`EffRef`], its value).
    eff: usize,
    /// (data batch, row) of its values; unused for a delete.
    data: (usize, usize),
    kind: Kind,
    /// From this run (counted in the report) rather than read back.
    new: bool,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Upsert,
    Delete,
}

/// The tombstones' column that tells an absorbed event (true: an event a version
/// continued, its tracked columns equal to the version's; kept with its values, so a
/// late event that splits the version replays it) from a delete.
const CONTINUES: &str = "__sediment_continues";

/// One version of the rebuilt history.
struct Version {
    /// Its values: the opener's, or the last absorbed event's.
    data: (usize, usize),
    from: usize,
    to: Option<usize>,
    /// The event that opened it: kept in the tombstones with its own values once the
    /// version absorbs an event (a late event that splits it replays both).
    opener: Event,
    opener_marked: bool,
}

/// What the tombstones should hold at a key and time: a delete, or an absorbed event
/// with its values (`data`).
struct Mark {
    key: usize,
    eff: usize,
    data: (usize, usize),
    continues: bool,
    /// From this run's events (written even where a mark of that kind is recorded:
    /// the run's event replaced the recorded one).
    new: bool,
}

/// How a run's events came out, for the report.
#[derive(Default)]
struct Outcomes {
    opened: u64,
    in_place: u64,
    closed: u64,
    superseded: u64,
}

/// Apply the run's `events` (projected, checked, one per key and `effective_at`, with
/// the delete flag) to the SCD type 2 `target`. `schema`: the projected columns.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn commit(
    spec: &PipelineSpec,
    events: Vec<RecordBatch>,
    schema: SchemaRef,
    target: &mut Table,
    tombstones: Option<&mut Table>,
    txns: &[(String, i64)],
    lineage: serde_json::Value,
    report: &mut PipelineRunReport,
) -> Result<()> {
    let tombstones = tombstones.ok_or_else(|| Error::internal("an scd2 pipeline without its tombstones"))?;
    let scd = spec.scd2.as_ref().ok_or_else(|| Error::internal("an scd2 commit without scd2 settings"))?;
    let eff = spec.effective_at().ok_or_else(|| Error::internal("an scd2 pipeline without effective_at"))?;
    let named = |message: String| Error::invalid(format!("pipeline {}: {message}", spec.name));
    let eff_type = schema.field_with_name(eff).map_err(|_| named(format!("effective_at {eff} is not a column")))?;
    let eff_type = eff_type.data_type().clone();
    let nulls: usize = events.iter().map(|b| b.column_by_name(eff).map_or(0, |c| c.null_count())).sum();
    if nulls > 0 {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "pipeline {}: {nulls} events have no {eff}, which orders their versions (a not_null rule with \
                 action quarantine sets them aside)",
                spec.name
            ),
        ));
    }
    // The target's columns: the projected ones and the three of SCD type 2.
    let target_schema: SchemaRef = if target.exists() {
        let schema = plain_schema(target)?;
        for column in [&scd.valid_from, &scd.valid_to, &scd.current] {
            if schema.field_with_name(column).is_err() {
                return Err(named(format!("target {} has no SCD type 2 column {column}", target.uri())));
            }
        }
        schema
    } else {
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new(&scd.valid_from, eff_type.clone(), false));
        fields.push(Field::new(&scd.valid_to, eff_type.clone(), true));
        fields.push(Field::new(&scd.current, DataType::Boolean, false));
        Arc::new(Schema::new(fields))
    };
    let data_names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    for name in &data_names {
        if target_schema.field_with_name(name).is_err() {
            return Err(named(format!("target {} has no column {name}", target.uri())));
        }
    }
    let events: Vec<RecordBatch> = events.into_iter().filter(|b| b.num_rows() > 0).collect();
    if events.is_empty() {
        return progress(spec, target, target_schema, txns, lineage, report).await;
    }

    // The keys the run touches, and the target's rows of them.
    let key_types: Vec<SortField> = spec
        .keys
        .iter()
        .map(|k| schema.field_with_name(k).map(|f| SortField::new(f.data_type().clone())))
        .collect::<std::result::Result<_, _>>()?;
    let key_converter = RowConverter::new(key_types)?;
    let keys_of = |batch: &RecordBatch| -> Result<Vec<ArrayRef>> {
        spec.keys
            .iter()
            .map(|k| column(batch, k).and_then(|c| cast_to(&c, schema.field_with_name(k)?.data_type())))
            .collect()
    };
    let mut key_rows = key_converter.empty_rows(0, 0);
    for batch in &events {
        key_converter.append(&mut key_rows, &keys_of(batch)?)?;
    }
    let new_rows = key_rows.num_rows();
    let touched: HashSet<Vec<u8>> = key_rows.iter().map(|r| r.data().to_vec()).collect();
    let range = key_range(&spec.keys[0], &events)?;
    // The rows of `table` with a touched key.
    let touched_rows = async |table: &Table| -> Result<Vec<RecordBatch>> {
        if !table.exists() {
            return Ok(Vec::new());
        }
        let mut scan = table.scan();
        if let Some(filter) = &range {
            scan = scan.filter(filter.clone());
        }
        let (batches, _) = scan.execute().await?.collect().await?;
        let mut kept = Vec::new();
        for batch in batches.into_iter().filter(|b| b.num_rows() > 0) {
            let rows = key_converter.convert_columns(&keys_of(&batch)?)?;
            let mask: BooleanArray = rows.iter().map(|r| Some(touched.contains(r.data()))).collect();
            let batch = deltalake::arrow::compute::filter_record_batch(&batch, &mask)?;
            if batch.num_rows() > 0 {
                kept.push(batch);
            }
        }
        Ok(kept)
    };
    let existing = touched_rows(target).await?;
    // Deletes of earlier runs (every one: a delete that closed nothing then may close
    // a late event's version now).
    let recorded = touched_rows(tombstones)
        .await
        .map_err(|e| e.context(format!("pipeline {}: reading its tombstones", spec.name)))?;
    for batch in existing.iter().chain(&recorded) {
        key_converter.append(&mut key_rows, &keys_of(batch)?)?;
    }

    // Every value source: the run's events' data, then the target rows' data (in the
    // projected columns and types); effective times: the events', the rows' valid_from
    // and valid_to, and one null (an open version's valid_to).
    // (Data batches: the run's events, the target's rows, the tombstones' rows, and
    // one row of nulls, all in the projected columns, nullable.)
    let nullable: SchemaRef = Arc::new(Schema::new(
        schema.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect::<Vec<_>>(),
    ));
    let mut data: Vec<RecordBatch> = Vec::new();
    let mut effs: Vec<ArrayRef> = Vec::new();
    for batch in &events {
        data.push(project(batch, &nullable)?);
        effs.push(column(batch, eff)?);
    }
    for batch in existing.iter().chain(&recorded) {
        data.push(project(batch, &nullable)?);
    }
    let null_row = data.len();
    let nulls: Vec<ArrayRef> = nullable.fields().iter().map(|f| new_null_array(f.data_type(), 1)).collect();
    data.push(RecordBatch::try_new(nullable.clone(), nulls)?);
    for batch in &existing {
        effs.push(cast_to(&column(batch, &scd.valid_from)?, &eff_type)?);
    }
    for batch in &existing {
        effs.push(cast_to(&column(batch, &scd.valid_to)?, &eff_type)?);
    }
    for batch in &recorded {
        effs.push(cast_to(&column(batch, eff)?, &eff_type)?);
    }
    effs.push(new_null_array(&eff_type, 1));
    let eff_converter = RowConverter::new(vec![SortField::new(eff_type.clone())])?;
    let mut eff_rows = eff_converter.empty_rows(0, 0);
    let mut eff_location: Vec<(usize, usize)> = Vec::new();
    for (a, array) in effs.iter().enumerate() {
        eff_converter.append(&mut eff_rows, std::slice::from_ref(array))?;
        eff_location.extend((0..array.len()).map(|r| (a, r)));
    }
    let null_eff = eff_rows.num_rows() - 1;

    // The events: the run's, the history's rows, and the tombstones' marks.
    let mut list: Vec<Event> = Vec::new();
    let mut n = 0;
    for (b, batch) in events.iter().enumerate() {
        let deletes = column(batch, DELETE_COLUMN)?;
        let deletes = deletes.as_any().downcast_ref::<BooleanArray>().ok_or_else(|| Error::internal("delete flag"))?;
        for r in 0..batch.num_rows() {
            let kind = if deletes.value(r) { Kind::Delete } else { Kind::Upsert };
            list.push(Event { key: n, eff: n, data: (b, r), kind, new: true });
            n += 1;
        }
    }
    let existing_rows: usize = existing.iter().map(|b| b.num_rows()).sum();
    let from_base = n;
    let to_base = from_base + existing_rows;
    let recorded_base = to_base + existing_rows;
    let starts: HashSet<(&[u8], &[u8])> =
        (0..existing_rows).map(|i| (key_rows.row(new_rows + i).data(), eff_rows.row(from_base + i).data())).collect();
    let mut i = 0;
    for (b, batch) in existing.iter().enumerate() {
        let to = &effs[events.len() + existing.len() + b];
        for r in 0..batch.num_rows() {
            let key = new_rows + i;
            // A row closed where no row of its key starts: a delete there.
            let ends_in_a_delete =
                to.is_valid(r) && !starts.contains(&(key_rows.row(key).data(), eff_rows.row(to_base + i).data()));
            if ends_in_a_delete {
                list.push(Event { key, eff: to_base + i, data: (0, 0), kind: Kind::Delete, new: false });
            }
            list.push(Event { key, eff: from_base + i, data: (events.len() + b, r), kind: Kind::Upsert, new: false });
            i += 1;
        }
    }
    // Recorded marks last: at one time, an opener's own values win over its row's
    // (which took its absorbed events' values in place).
    let mut recorded_kinds: Vec<bool> = Vec::new();
    let mut j = 0;
    for (b, batch) in recorded.iter().enumerate() {
        let continues = column(batch, CONTINUES)?;
        let continues =
            continues.as_any().downcast_ref::<BooleanArray>().ok_or_else(|| Error::internal("tombstone kind"))?;
        for r in 0..batch.num_rows() {
            recorded_kinds.push(continues.value(r));
            let kind = if continues.value(r) { Kind::Upsert } else { Kind::Delete };
            let data = (events.len() + existing.len() + b, r);
            list.push(Event { key: new_rows + existing_rows + j, eff: recorded_base + j, data, kind, new: false });
            j += 1;
        }
    }
    // In order per key; of two at one time the later in the list (the run's first).
    list.sort_by(|a, b| {
        key_rows
            .row(a.key)
            .cmp(&key_rows.row(b.key))
            .then(eff_rows.row(a.eff).cmp(&eff_rows.row(b.eff)))
            .then(a.new.cmp(&b.new))
    });
    let same =
        |a: &Event, b: &Event| key_rows.row(a.key) == key_rows.row(b.key) && eff_rows.row(a.eff) == eff_rows.row(b.eff);
    let mut unique: Vec<Event> = Vec::with_capacity(list.len());
    for e in list {
        match unique.last_mut() {
            Some(last) if same(last, &e) => {
                if last.new && e.new {
                    return Err(Error::internal("two events of one key and effective time in a run"));
                }
                *last = e;
            }
            _ => unique.push(e),
        }
    }

    // Walk each key's events into versions, and what the tombstones should hold: every
    // delete, and every event a version continued (absorbed into it).
    let tracked = tracked_columns(spec, &schema, eff)?;
    let tracked_converter =
        RowConverter::new(tracked.iter().map(|i| SortField::new(schema.field(*i).data_type().clone())).collect())?;
    let mut tracked_rows: Vec<Rows> = Vec::new();
    for batch in &data {
        let columns: Vec<ArrayRef> = tracked.iter().map(|i| batch.column(*i).clone()).collect();
        tracked_rows.push(tracked_converter.convert_columns(&columns)?);
    }
    let same_tracked = |a: (usize, usize), b: (usize, usize)| tracked_rows[a.0].row(a.1) == tracked_rows[b.0].row(b.1);
    let mut versions: Vec<Version> = Vec::new();
    let mut outcomes = Outcomes::default();
    let mut marks: Vec<Mark> = Vec::new();
    let mut open: Option<Version> = None;
    for (n, e) in unique.iter().enumerate() {
        if n == 0 || key_rows.row(unique[n - 1].key) != key_rows.row(e.key) {
            versions.extend(open.take());
        }
        match e.kind {
            Kind::Delete => {
                marks.push(Mark { key: e.key, eff: e.eff, data: (null_row, 0), continues: false, new: e.new });
                match open.take() {
                    Some(mut v) => {
                        v.to = Some(e.eff);
                        versions.push(v);
                        outcomes.closed += e.new as u64;
                    }
                    None => outcomes.superseded += e.new as u64,
                }
            }
            Kind::Upsert => {
                if let Some(v) = open.as_mut()
                    && same_tracked(v.data, e.data)
                {
                    v.data = e.data;
                    if !v.opener_marked {
                        let o = v.opener;
                        marks.push(Mark { key: o.key, eff: o.eff, data: o.data, continues: true, new: o.new });
                        v.opener_marked = true;
                    }
                    marks.push(Mark { key: e.key, eff: e.eff, data: e.data, continues: true, new: e.new });
                    outcomes.in_place += e.new as u64;
                    continue;
                }
                if let Some(mut v) = open.take() {
                    v.to = Some(e.eff);
                    versions.push(v);
                }
                open = Some(Version { data: e.data, from: e.eff, to: None, opener: *e, opener_marked: false });
                outcomes.opened += e.new as u64;
            }
        }
    }
    versions.extend(open);

    // The tombstones' changes, committed before the target with the run's txns.
    let tombstone_schema: SchemaRef = {
        let mut fields: Vec<Field> = spec
            .keys
            .iter()
            .map(String::as_str)
            .chain([eff])
            .map(|c| schema.field_with_name(c).cloned())
            .collect::<std::result::Result<_, _>>()?;
        fields.push(Field::new(CONTINUES, DataType::Boolean, false));
        fields.extend(
            nullable
                .fields()
                .iter()
                .filter(|f| !spec.keys.contains(f.name()) && f.name() != eff)
                .map(|f| f.as_ref().clone()),
        );
        Arc::new(Schema::new(fields))
    };
    let mut recorded_kind: HashMap<(&[u8], &[u8]), bool> = HashMap::new();
    for (j, kind) in recorded_kinds.iter().enumerate() {
        recorded_kind
            .insert((key_rows.row(new_rows + existing_rows + j).data(), eff_rows.row(recorded_base + j).data()), *kind);
    }
    let mut upserts: Vec<Mark> = Vec::new();
    for m in marks {
        let at = (key_rows.row(m.key).data(), eff_rows.row(m.eff).data());
        if recorded_kind.remove(&at) != Some(m.continues) || m.new {
            upserts.push(m);
        }
    }
    let mut removed: Vec<Mark> = Vec::new();
    for (j, kind) in recorded_kinds.iter().enumerate() {
        let (key, eff) = (new_rows + existing_rows + j, recorded_base + j);
        if recorded_kind.contains_key(&(key_rows.row(key).data(), eff_rows.row(eff).data())) {
            removed.push(Mark { key, eff, data: (null_row, 0), continues: *kind, new: false });
        }
    }
    // Keys and effective time from their row encoding; the other columns from the data.
    let marks_batch = |marks: &[Mark]| -> Result<RecordBatch> {
        let mut columns = key_converter.convert_rows(marks.iter().map(|m| key_rows.row(m.key)))?;
        columns.extend(eff_converter.convert_rows(marks.iter().map(|m| eff_rows.row(m.eff)))?);
        columns.push(Arc::new(marks.iter().map(|m| Some(m.continues)).collect::<BooleanArray>()));
        let at: Vec<(usize, usize)> = marks.iter().map(|m| m.data).collect();
        for field in tombstone_schema.fields().iter().skip(spec.keys.len() + 2) {
            let i = nullable.index_of(field.name())?;
            let arrays: Vec<&dyn Array> = data.iter().map(|b| b.column(i).as_ref()).collect();
            columns.push(interleave(&arrays, &at)?);
        }
        let columns = columns
            .into_iter()
            .zip(tombstone_schema.fields())
            .map(|(c, f)| cast_to(&c, f.data_type()))
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new(tombstone_schema.clone(), columns)?)
    };
    if !upserts.is_empty() || !removed.is_empty() {
        write_tombstones(spec, tombstones, marks_batch(&upserts)?, marks_batch(&removed)?, txns, &lineage).await?;
    }

    // The history's rows, in the target's columns.
    let rows = build_rows(&target_schema, scd, eff, &data, &schema, &effs, &eff_location, &versions, null_eff)?;
    if !target.exists() {
        let written = target.write([rows], progress_options(spec, txns, lineage)).await?;
        report.target_version = written.version;
        report.committed = written.version.is_some();
        count(report, &outcomes, 0);
        return Ok(());
    }

    // What differs from the target: changed and new rows, and rows no longer there.
    let full_converter =
        RowConverter::new(target_schema.fields().iter().map(|f| SortField::new(f.data_type().clone())).collect())?;
    let existing_full: Vec<RecordBatch> = existing.iter().map(|b| project(b, &target_schema)).collect::<Result<_>>()?;
    // (key, valid_from) -> (the whole row, where it is).
    type RowsAt = HashMap<(Vec<u8>, Vec<u8>), (Vec<u8>, (usize, usize))>;
    let mut before: RowsAt = HashMap::new();
    let mut i = 0;
    for (b, batch) in existing_full.iter().enumerate() {
        let full = full_converter.convert_columns(batch.columns())?;
        for r in 0..batch.num_rows() {
            let id = (key_rows.row(new_rows + i).data().to_vec(), eff_rows.row(from_base + i).data().to_vec());
            before.insert(id, (full.row(r).data().to_vec(), (b, r)));
            i += 1;
        }
    }
    let after_full = full_converter.convert_columns(rows.columns())?;
    let after_keys = key_converter.convert_columns(&keys_of(&rows)?)?;
    let after_from = eff_converter.convert_columns(&[column(&rows, &scd.valid_from)?])?;
    let mut changed: Vec<u32> = Vec::new();
    for r in 0..rows.num_rows() {
        let id = (after_keys.row(r).data().to_vec(), after_from.row(r).data().to_vec());
        match before.remove(&id) {
            Some((full, _)) if full == after_full.row(r).data() => {}
            _ => changed.push(r as u32),
        }
    }
    let mut gone: Vec<(usize, usize)> = before.into_values().map(|(_, at)| at).collect();
    gone.sort_unstable();
    if changed.is_empty() && gone.is_empty() {
        count(report, &outcomes, 0);
        return progress(spec, target, target_schema, txns, lineage, report).await;
    }
    let upserts =
        deltalake::arrow::compute::take_record_batch(&rows, &deltalake::arrow::array::UInt32Array::from(changed))?;
    let mut source = vec![with_flag(&upserts, false)?];
    if !gone.is_empty() {
        let refs: Vec<&RecordBatch> = existing_full.iter().collect();
        let gone = deltalake::arrow::compute::interleave_record_batch(&refs, &gone)?;
        source.push(with_flag(&RecordBatch::try_new(rows.schema(), gone.columns().to_vec())?, true)?);
    }
    let flag = quote(DELETE_COLUMN);
    let merge = target
        .merge(source)
        .on(spec.keys.iter().cloned().chain([scd.valid_from.clone()]).collect::<Vec<_>>())
        .when_matched_if(format!("source.{flag}"), MatchedAction::Delete)
        .when_matched(MatchedAction::UpdateAll)
        .when_not_matched_if(format!("NOT source.{flag}"), NotMatchedAction::InsertAll);
    let Some(merged) = execute_merge(spec, merge, txns, &lineage, report).await? else { return Ok(()) };
    count(report, &outcomes, merged.rows_deleted);
    if merged.version.is_none() {
        return progress(spec, target, target_schema, txns, lineage, report).await;
    }
    report.target_version = merged.version;
    report.committed = true;
    Ok(())
}

/// Write the tombstones' changes: `upserts` (new or changed marks) and `removed`
/// (marks no longer there), with the run's txns.
async fn write_tombstones(
    spec: &PipelineSpec,
    tombstones: &mut Table,
    upserts: RecordBatch,
    removed: RecordBatch,
    txns: &[(String, i64)],
    lineage: &serde_json::Value,
) -> Result<()> {
    let uri = tombstones.uri().to_string();
    let what = |e: Error| e.context(format!("pipeline {}: writing its tombstones {uri}", spec.name));
    if !tombstones.exists() {
        let mut options = WriteOptions::append();
        for (app, version) in txns {
            options = options.app_transaction(app.clone(), *version);
        }
        options.commit_info.push((crate::pipeline::LINEAGE_KEY.to_string(), lineage.clone()));
        tombstones.write([upserts], options).await.map_err(what)?;
        return Ok(());
    }
    let on: Vec<String> =
        upserts.schema().fields().iter().take(spec.keys.len() + 1).map(|f| f.name().clone()).collect();
    let flag = quote(DELETE_COLUMN);
    let mut merge = tombstones
        .merge(vec![with_flag(&upserts, false)?, with_flag(&removed, true)?])
        .on(on)
        .when_matched_if(format!("source.{flag}"), MatchedAction::Delete)
        .when_matched(MatchedAction::UpdateAll)
        .when_not_matched_if(format!("NOT source.{flag}"), NotMatchedAction::InsertAll);
    for (app, version) in txns {
        merge = merge.app_transaction(app.clone(), *version);
    }
    merge.commit_info(crate::pipeline::LINEAGE_KEY, lineage.clone()).execute().await.map_err(what)?;
    Ok(())
}

/// The report's counts: of the run's events, those that opened a version (inserted),
/// changed the open one in place (updated), closed one (deleted), or changed nothing
/// (superseded: a delete with no open version, or an event its key's history already
/// had). `replaced`: target rows the new history no longer has.
fn count(report: &mut PipelineRunReport, outcomes: &Outcomes, replaced: u64) {
    report.rows_inserted = outcomes.opened;
    report.rows_updated = outcomes.in_place;
    report.rows_deleted = outcomes.closed;
    report.rows_superseded += outcomes.superseded;
    report.rows_replaced = replaced;
}

/// A commit with no rows that records the consumed versions.
async fn progress(
    spec: &PipelineSpec,
    target: &mut Table,
    schema: SchemaRef,
    txns: &[(String, i64)],
    lineage: serde_json::Value,
    report: &mut PipelineRunReport,
) -> Result<()> {
    let written = target.write([RecordBatch::new_empty(schema)], progress_options(spec, txns, lineage)).await?;
    report.target_version = written.version;
    report.committed = written.version.is_some();
    Ok(())
}

/// The history's rows: each version's values, `valid_from`, `valid_to` and `current`.
#[allow(clippy::too_many_arguments)]
fn build_rows(
    target: &SchemaRef,
    scd: &crate::pipeline::Scd2Spec,
    eff: &str,
    data: &[RecordBatch],
    data_schema: &SchemaRef,
    effs: &[ArrayRef],
    eff_location: &[(usize, usize)],
    versions: &[Version],
    null_eff: usize,
) -> Result<RecordBatch> {
    let rows: Vec<(usize, usize)> = versions.iter().map(|v| v.data).collect();
    let from: Vec<(usize, usize)> = versions.iter().map(|v| eff_location[v.from]).collect();
    let to: Vec<(usize, usize)> = versions.iter().map(|v| eff_location[v.to.unwrap_or(null_eff)]).collect();
    let eff_refs: Vec<&dyn Array> = effs.iter().map(|a| a.as_ref()).collect();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for field in target.fields() {
        let name = field.name();
        let column = if *name == scd.valid_from || *name == eff {
            interleave(&eff_refs, &from)?
        } else if *name == scd.valid_to {
            interleave(&eff_refs, &to)?
        } else if *name == scd.current {
            Arc::new(versions.iter().map(|v| Some(v.to.is_none())).collect::<BooleanArray>())
        } else {
            let i = data_schema.index_of(name)?;
            let arrays: Vec<&dyn Array> = data.iter().map(|b| b.column(i).as_ref()).collect();
            interleave(&arrays, &rows)?
        };
        columns.push(cast_to(&column, field.data_type())?);
    }
    Ok(RecordBatch::try_new(target.clone(), columns)?)
}

/// The data columns whose change opens a version.
fn tracked_columns(spec: &PipelineSpec, schema: &SchemaRef, eff: &str) -> Result<Vec<usize>> {
    let scd = spec.scd2.as_ref().ok_or_else(|| Error::internal("scd2 settings"))?;
    if scd.track_columns.is_empty() {
        return Ok((0..schema.fields().len())
            .filter(|i| {
                let name = schema.field(*i).name();
                !spec.keys.contains(name) && name != eff
            })
            .collect());
    }
    scd.track_columns
        .iter()
        .map(|c| {
            schema.index_of(c).map_err(|_| {
                Error::invalid(format!("pipeline {}: scd2.track_columns: {c} is not a target column", spec.name))
            })
        })
        .collect()
}

/// A filter on the first key's range among the run's events (integer and string keys),
/// so the target's files outside it are skipped by their statistics.
fn key_range(key: &str, events: &[RecordBatch]) -> Result<Option<String>> {
    use deltalake::arrow::array::{Int64Array, StringArray};
    let mut ints: Option<(i64, i64)> = None;
    let mut strings: Option<(String, String)> = None;
    for batch in events {
        let column = column(batch, key)?;
        match column.data_type() {
            DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => {
                let values = cast(&column, &DataType::Int64)?;
                let values = values.as_any().downcast_ref::<Int64Array>().ok_or_else(|| Error::internal("int64"))?;
                let (Some(lo), Some(hi)) =
                    (deltalake::arrow::compute::min(values), deltalake::arrow::compute::max(values))
                else {
                    return Ok(None);
                };
                ints = Some(ints.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
            }
            DataType::Utf8 => {
                let values = column.as_any().downcast_ref::<StringArray>().ok_or_else(|| Error::internal("utf8"))?;
                let (Some(lo), Some(hi)) =
                    (deltalake::arrow::compute::min_string(values), deltalake::arrow::compute::max_string(values))
                else {
                    return Ok(None);
                };
                let (lo, hi) = (lo.to_string(), hi.to_string());
                strings = Some(match strings {
                    None => (lo, hi),
                    Some((a, b)) => (a.min(lo), b.max(hi)),
                });
            }
            _ => return Ok(None),
        }
    }
    let k = quote(key);
    let literal = |s: &str| format!("'{}'", s.replace('\'', "''"));
    Ok(match (ints, strings) {
        (Some((lo, hi)), _) => Some(format!("{k} >= {lo} AND {k} <= {hi}")),
        (_, Some((lo, hi))) => Some(format!("{k} >= {} AND {k} <= {}", literal(&lo), literal(&hi))),
        _ => None,
    })
}

fn column(batch: &RecordBatch, name: &str) -> Result<ArrayRef> {
    batch.column_by_name(name).cloned().ok_or_else(|| Error::internal(format!("no column {name}")))
}

fn cast_to(array: &ArrayRef, to: &DataType) -> Result<ArrayRef> {
    if array.data_type() == to { Ok(array.clone()) } else { Ok(cast(array, to)?) }
}

/// `batch`'s columns named as `schema`'s, in its types.
fn project(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|f| cast_to(&column(batch, f.name())?, f.data_type()))
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// `batch` with the delete flag.
fn with_flag(batch: &RecordBatch, delete: bool) -> Result<RecordBatch> {
    let mut fields: Vec<Field> = batch.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(DELETE_COLUMN, DataType::Boolean, false));
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(BooleanArray::from(vec![delete; batch.num_rows()])));
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
}
