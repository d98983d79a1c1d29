//! Validation: from a parsed [`ProductDescriptor`] to a checked [`Product`].
//!
//! Validation collects every problem it finds instead of stopping at the first, so a
//! domain team fixes a descriptor in one round. Each [`Problem`] names the field and
//! says what to change.

use std::collections::HashSet;
use std::path::Path;
use std::str::FromStr;

use arrow_schema::DataType;
use url::Url;

use crate::derived::{DerivedMode, validate_derivation};
use crate::descriptor::TableFormat;
use crate::descriptor::{ColumnDescriptor, ProductDescriptor, TableDescriptor};
use crate::error::Problem;
use crate::keys::{TableName, validate_keys};
use crate::policy::{AggregateOnlyRule, MaskKind, PolicyDescriptor, ReadRule};
use crate::product::{Column, Product, Sla, Table, TimeTravel};
use crate::quality::{parse_completeness, validate_checks, validate_schedule};
use crate::remote::{NodeEndpoint, RemoteSource, remote_table_parts};

/// Longest duration accepted in a descriptor (schedules, ages): 100 years, far from
/// overflowing a timestamp.
pub(crate) const MAX_DURATION: std::time::Duration =
    std::time::Duration::from_secs(100 * 365 * 86_400);

/// Longest identifier accepted for a domain, product, table or column.
pub const MAX_IDENTIFIER_LEN: usize = 63;

/// Where a descriptor was found, which validation checks the descriptor against.
#[derive(Debug, Clone, Copy)]
pub struct DescriptorOrigin<'a> {
    /// Root of the mesh; relative table locations are resolved against it.
    pub mesh_root: &'a Path,
    /// Domain folder the file sits in; must equal `domain`.
    pub folder_domain: &'a str,
    /// File stem; must equal `product`.
    pub file_stem: &'a str,
    /// The descriptor file.
    pub file: &'a Path,
}

/// Checks `descriptor` and builds the validated [`Product`], or returns every problem.
pub fn validate_descriptor(
    descriptor: &ProductDescriptor,
    origin: DescriptorOrigin<'_>,
) -> Result<Product, Vec<Problem>> {
    let mut problems = Vec::new();

    check_identifier("domain", &descriptor.domain, &mut problems);
    if descriptor.domain != origin.folder_domain {
        problems.push(Problem::new(
            "domain",
            format!(
                "is '{}' but the descriptor sits in the folder of domain '{}'; \
                 move the file or correct the field",
                descriptor.domain, origin.folder_domain
            ),
        ));
    }
    check_identifier("product", &descriptor.product, &mut problems);
    if descriptor.product != origin.file_stem {
        problems.push(Problem::new(
            "product",
            format!(
                "is '{}' but the file is named '{}.yaml'; rename one to match the other",
                descriptor.product, origin.file_stem
            ),
        ));
    }
    check_version(&descriptor.version, &mut problems);
    check_not_blank("description", &descriptor.description, &mut problems);
    check_not_blank("owner.team", &descriptor.owner.team, &mut problems);
    check_not_blank("owner.contact", &descriptor.owner.contact, &mut problems);
    for (i, tag) in descriptor.tags.iter().enumerate() {
        check_tag(&format!("tags[{i}]"), tag, &mut problems);
    }
    let sla = validate_sla(descriptor, &mut problems);
    let quality_schedule = validate_schedule(descriptor.quality.as_ref(), &mut problems);

    if descriptor.tables.is_empty() {
        problems.push(Problem::new(
            "tables",
            "declares no table; a product publishes at least one",
        ));
    }
    let mut seen_tables = HashSet::new();
    let mut tables = Vec::with_capacity(descriptor.tables.len());
    for (i, table) in descriptor.tables.iter().enumerate() {
        let at = format!("tables[{i}]");
        if !seen_tables.insert(table.name.as_str()) {
            problems.push(Problem::new(
                format!("{at}.name"),
                format!("table '{}' is declared twice", table.name),
            ));
        }
        if let Some(table) = validate_table(
            &at,
            (&descriptor.domain, &descriptor.product),
            table,
            origin.mesh_root,
            origin.file.parent(),
            &mut problems,
        ) {
            tables.push(table);
        }
    }

    if let Some(policy) = &descriptor.policy {
        validate_policy(policy, &descriptor.tables, &mut problems);
    }
    let own = format!("{}.{}", descriptor.domain, descriptor.product);
    let deprecation = descriptor
        .deprecation
        .as_ref()
        .and_then(|d| crate::deprecation::validate_deprecation(d, &own, &mut problems));

    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Product {
        domain: descriptor.domain.clone(),
        name: descriptor.product.clone(),
        version: descriptor.version.clone(),
        description: descriptor.description.trim().to_string(),
        owner_team: descriptor.owner.team.clone(),
        owner_contact: descriptor.owner.contact.clone(),
        owner_roles: descriptor.owner.roles.clone(),
        tags: descriptor.tags.clone(),
        sla,
        tables,
        policy: descriptor.policy.clone(),
        quality_schedule,
        result_cache: descriptor.serving.as_ref().is_none_or(|s| s.result_cache),
        budget: descriptor.serving.as_ref().and_then(|s| s.budget),
        deprecation,
        source: origin.file.to_path_buf(),
    })
}

fn validate_policy(
    policy: &PolicyDescriptor,
    tables: &[TableDescriptor],
    problems: &mut Vec<Problem>,
) {
    check_read_rule("policy.read", &policy.read, problems);
    for (i, rule) in policy.rows.iter().enumerate() {
        let at = format!("policy.rows[{i}]");
        if rule.filter.trim().is_empty() {
            problems.push(Problem::new(
                format!("{at}.filter"),
                "is empty; write a SQL predicate such as `region = principal.region`",
            ));
        }
        for table in &rule.tables {
            if !tables.iter().any(|t| &t.name == table) {
                problems.push(Problem::new(
                    format!("{at}.tables"),
                    format!("'{table}' is not a table of this product"),
                ));
            }
        }
        check_roles(&format!("{at}.unless_role"), &rule.unless_role, problems);
    }
    for (key, rule) in &policy.columns {
        let at = format!("policy.columns.{key}");
        let exists = match key.split_once('.') {
            Some((table, column)) => tables
                .iter()
                .any(|t| t.name == table && t.columns.iter().any(|c| c.name == column)),
            None => tables
                .iter()
                .any(|t| t.columns.iter().any(|c| &c.name == key)),
        };
        if !exists {
            problems.push(Problem::new(
                &at,
                format!("'{key}' is not a declared column (write `column` or `table.column`)"),
            ));
        }
        if rule.hide == rule.mask.is_some() {
            problems.push(Problem::new(
                &at,
                "give exactly one of `hide: true` or `mask: null | redact | hash | partial`",
            ));
        }
        check_roles(&format!("{at}.unless_role"), &rule.unless_role, problems);
    }
    if let Some(rule) = &policy.aggregate_only {
        validate_aggregate_only(rule, policy, tables, problems);
    }
}

/// `policy.aggregate_only`: a threshold of at least 2, tables of the product, and a
/// privacy unit that each table it applies to declares.
fn validate_aggregate_only(
    rule: &AggregateOnlyRule,
    policy: &PolicyDescriptor,
    tables: &[TableDescriptor],
    problems: &mut Vec<Problem>,
) {
    let at = "policy.aggregate_only";
    if rule.min_group_size < 2 {
        problems.push(Problem::new(
            format!("{at}.min_group_size"),
            "must be at least 2 (a group of one is a row)",
        ));
    }
    for table in &rule.tables {
        if !tables.iter().any(|t| &t.name == table) {
            problems.push(Problem::new(
                format!("{at}.tables"),
                format!("'{table}' is not a table of this product"),
            ));
        }
    }
    if let Some(unit) = &rule.privacy_unit {
        for table in tables
            .iter()
            .filter(|t| rule.tables.is_empty() || rule.tables.contains(&t.name))
        {
            if !table.columns.iter().any(|c| &c.name == unit) {
                problems.push(Problem::new(
                    format!("{at}.privacy_unit"),
                    format!("'{unit}' is not a column of table '{}'", table.name),
                ));
            }
            // A caller who sees the unit hidden, or masked into values that no longer
            // tell contributors apart, could not be counted (and would be refused).
            let qualified = format!("{}.{unit}", table.name);
            for key in [unit, &qualified] {
                if let Some(column) = policy.columns.get(key)
                    && (column.hide || column.mask.is_some_and(|m| m != MaskKind::Hash))
                {
                    problems.push(Problem::new(
                        format!("{at}.privacy_unit"),
                        format!(
                            "'{unit}' is hidden or masked by policy.columns.{key}, so the \
                             callers the rule applies to could not be counted; mask it with \
                             `hash` (hashes stay distinct) or leave it clear"
                        ),
                    ));
                }
            }
        }
    }
    check_roles(&format!("{at}.unless_role"), &rule.unless_role, problems);
}

/// Checks that a read rule states at least one condition, and that
/// `any_authenticated` stands alone (it would make the other conditions meaningless).
pub(crate) fn check_read_rule(at: &str, rule: &ReadRule, problems: &mut Vec<Problem>) {
    if rule.is_empty() {
        problems.push(Problem::new(
            at,
            "states no condition; list any_role, all_roles or attributes (or any_authenticated: true)",
        ));
    }
    if rule.any_authenticated
        && (!rule.any_role.is_empty() || !rule.all_roles.is_empty() || !rule.attributes.is_empty())
    {
        problems.push(Problem::new(
            at,
            "any_authenticated: true cannot be combined with other conditions",
        ));
    }
    check_roles(&format!("{at}.any_role"), &rule.any_role, problems);
    check_roles(&format!("{at}.all_roles"), &rule.all_roles, problems);
}

fn check_roles(at: &str, roles: &[String], problems: &mut Vec<Problem>) {
    for role in roles {
        if role.trim().is_empty() || role.chars().any(char::is_whitespace) {
            problems.push(Problem::new(at, format!("'{role}' is not a role name")));
        }
    }
}

fn validate_sla(descriptor: &ProductDescriptor, problems: &mut Vec<Problem>) -> Sla {
    let Some(sla) = &descriptor.sla else {
        return Sla::default();
    };
    let freshness =
        sla.freshness
            .as_deref()
            .and_then(|text| match humantime::parse_duration(text) {
                Ok(d) if !d.is_zero() => Some(d),
                Ok(_) => {
                    problems.push(Problem::new(
                        "sla.freshness",
                        "must be a positive duration such as '24h' or '30m'",
                    ));
                    None
                }
                Err(e) => {
                    problems.push(Problem::new(
                        "sla.freshness",
                        format!(
                            "'{text}' is not a duration ({e}); write e.g. '24h', '90m' or '7days'"
                        ),
                    ));
                    None
                }
            });
    if let Some(text) = &sla.completeness
        && parse_completeness(text).is_none()
    {
        problems.push(Problem::new(
            "sla.completeness",
            format!(
                "'{text}' cannot be measured; write the expected growth as e.g. \
                 '>= 1000 rows per day' (per hour, day or week)"
            ),
        ));
    }
    Sla {
        freshness,
        completeness: sla.completeness.clone(),
    }
}

fn validate_table(
    at: &str,
    owner: (&str, &str),
    table: &TableDescriptor,
    mesh_root: &Path,
    folder: Option<&Path>,
    problems: &mut Vec<Problem>,
) -> Option<Table> {
    let before = problems.len();
    check_identifier(&format!("{at}.name"), &table.name, problems);
    let own = TableName {
        domain: owner.0.to_string(),
        product: owner.1.to_string(),
        table: table.name.clone(),
    };
    let derived = table
        .derived
        .as_ref()
        .and_then(|d| validate_derivation(at, &own, d, folder, problems));
    let (format, location, remote) = validate_storage(at, table, mesh_root, problems);

    if table.columns.is_empty() {
        problems.push(Problem::new(
            format!("{at}.columns"),
            "declares no column; the contract lists every column consumers may use",
        ));
    }
    let mut seen = HashSet::new();
    let mut columns = Vec::with_capacity(table.columns.len());
    for (j, column) in table.columns.iter().enumerate() {
        let col_at = format!("{at}.columns[{j}]");
        if !seen.insert(column.name.as_str()) {
            problems.push(Problem::new(
                format!("{col_at}.name"),
                format!("column '{}' is declared twice", column.name),
            ));
        }
        if let Some(column) = validate_column(&col_at, column, problems) {
            columns.push(column);
        }
    }

    let mut seen_partitions = HashSet::new();
    for (k, name) in table.partition_columns.iter().enumerate() {
        let part_at = format!("{at}.partition_columns[{k}]");
        if !seen_partitions.insert(name.as_str()) {
            problems.push(Problem::new(&part_at, format!("'{name}' is listed twice")));
        }
        match columns.iter().find(|c| &c.name == name) {
            None => problems.push(Problem::new(
                &part_at,
                format!(
                    "'{name}' is not a declared column; declare it under columns with its type"
                ),
            )),
            Some(c) if !is_partition_type(&c.data_type) => problems.push(Problem::new(
                &part_at,
                format!(
                    "'{name}' has type {} which cannot be read from a directory name; \
                     use Utf8, an integer type or Date32",
                    c.data_type
                ),
            )),
            Some(_) => {}
        }
    }
    if !table.columns.is_empty() && table.partition_columns.len() >= table.columns.len() {
        problems.push(Problem::new(
            format!("{at}.partition_columns"),
            "every column is a partition column; at least one column must live in the files",
        ));
    }

    let time_travel = validate_time_travel(at, table, problems);
    let (primary_key, references) = validate_keys(
        at,
        &table.primary_key,
        &table.references,
        &columns,
        problems,
    );
    // A one-column key is measured as its promise: unique and never null, checked by the
    // quality agent like any declared check.
    if let [key] = primary_key.as_slice()
        && let Some(column) = columns.iter_mut().find(|c| &c.name == key)
    {
        column.checks.unique = true;
        column.checks.not_null = true;
    }
    if problems.len() != before {
        return None;
    }
    Some(Table {
        name: table.name.clone(),
        description: table.description.clone(),
        format: format?,
        location,
        partition_columns: table.partition_columns.clone(),
        columns,
        min_rows: table.quality.as_ref().and_then(|q| q.min_rows),
        time_travel,
        primary_key,
        references,
        derived,
        remote,
    })
}

/// The format and location of `table`: both required for a table read from storage
/// (a materialized derived table is written as Delta), neither for a virtual one; a
/// table served by a domain node has an endpoint and a remote name instead.
fn validate_storage(
    at: &str,
    table: &TableDescriptor,
    mesh_root: &Path,
    problems: &mut Vec<Problem>,
) -> (Option<TableFormat>, Option<Url>, Option<RemoteSource>) {
    let mode = table.derived.as_ref().map(|d| d.mode);
    if table.format == Some(TableFormat::FlightSql) && mode.is_none() {
        let remote = validate_remote(at, table, problems);
        return (Some(TableFormat::FlightSql), None, remote);
    }
    for (field, given) in [
        ("endpoint", table.endpoint.is_some()),
        ("remote_table", table.remote_table.is_some()),
    ] {
        if given {
            problems.push(Problem::new(
                format!("{at}.{field}"),
                "only a table with format: flightsql is served by a domain node; remove it",
            ));
        }
    }
    if mode == Some(DerivedMode::Virtual) {
        if table.format.is_some_and(|f| f != TableFormat::Virtual) {
            problems.push(Problem::new(
                format!("{at}.format"),
                "a virtual derived table has no storage; remove format, or use mode: materialized",
            ));
        }
        if table.location.is_some() {
            problems.push(Problem::new(
                format!("{at}.location"),
                "a virtual derived table has no storage; remove location, or use mode: materialized",
            ));
        }
        if !table.partition_columns.is_empty() {
            problems.push(Problem::new(
                format!("{at}.partition_columns"),
                "a virtual derived table has no files to partition; remove partition_columns",
            ));
        }
        return (Some(TableFormat::Virtual), None, None);
    }
    let format = match (table.format, mode) {
        (None, Some(_)) => {
            problems.push(Problem::new(
                format!("{at}.format"),
                "is missing; a materialized table is written as Delta: add format: delta",
            ));
            None
        }
        (None, None) => {
            problems.push(Problem::new(
                format!("{at}.format"),
                "is missing; write parquet, delta or flightsql",
            ));
            None
        }
        (Some(TableFormat::Virtual), _) => {
            problems.push(Problem::new(
                format!("{at}.format"),
                "only a derived table with mode: virtual has no storage; write parquet or delta",
            ));
            None
        }
        (Some(TableFormat::Parquet | TableFormat::FlightSql), Some(_)) => {
            problems.push(Problem::new(
                format!("{at}.format"),
                "a materialized table is written as Delta (one commit per run); use format: delta",
            ));
            None
        }
        (Some(format), _) => Some(format),
    };
    let location = match &table.location {
        Some(text) => parse_location(&format!("{at}.location"), text, mesh_root, problems),
        None => {
            problems.push(Problem::new(
                format!("{at}.location"),
                "is missing; give the URL of the table's directory",
            ));
            None
        }
    };
    (format, location, None)
}

/// The node and remote name of a `format: flightsql` table, which has no storage of its
/// own here (no location, no partitions).
fn validate_remote(
    at: &str,
    table: &TableDescriptor,
    problems: &mut Vec<Problem>,
) -> Option<RemoteSource> {
    if table.location.is_some() {
        problems.push(Problem::new(
            format!("{at}.location"),
            "a table served by a domain node has no storage here; remove location",
        ));
    }
    if !table.partition_columns.is_empty() {
        problems.push(Problem::new(
            format!("{at}.partition_columns"),
            "a table served by a domain node has no files here; remove partition_columns",
        ));
    }
    let endpoint = match table.endpoint.as_deref() {
        None => {
            problems.push(Problem::new(
                format!("{at}.endpoint"),
                "is missing; give the node's address, e.g. grpc+tls://clinical-node:50051",
            ));
            None
        }
        Some(text) => match NodeEndpoint::parse(text) {
            Ok(endpoint) => Some(endpoint),
            Err(e) => {
                problems.push(Problem::new(
                    format!("{at}.endpoint"),
                    format!("'{text}' {e}"),
                ));
                None
            }
        },
    };
    let name = match table.remote_table.as_deref() {
        None => {
            problems.push(Problem::new(
                format!("{at}.remote_table"),
                "is missing; give the table's name on the node (catalog.schema.table)",
            ));
            None
        }
        Some(text) => {
            let parts = remote_table_parts(text);
            if parts.is_none() {
                problems.push(Problem::new(
                    format!("{at}.remote_table"),
                    format!("'{text}' is not a table name; write catalog.schema.table, schema.table or table"),
                ));
            }
            parts
        }
    };
    Some(RemoteSource {
        endpoint: endpoint?,
        table: name?,
    })
}

/// `time_travel:` is for Delta tables, with an optional positive `max_age`.
fn validate_time_travel(
    at: &str,
    table: &TableDescriptor,
    problems: &mut Vec<Problem>,
) -> Option<TimeTravel> {
    let declared = table.time_travel.as_ref()?;
    if table.format != Some(TableFormat::Delta) {
        problems.push(Problem::new(
            format!("{at}.time_travel"),
            "only Delta tables keep past versions; remove time_travel or use format: delta",
        ));
    }
    let max_age =
        declared
            .max_age
            .as_deref()
            .and_then(|text| match humantime::parse_duration(text) {
                Ok(d) if !d.is_zero() && d <= MAX_DURATION => Some(d),
                _ => {
                    problems.push(Problem::new(
                        format!("{at}.time_travel.max_age"),
                        format!("'{text}' is not a duration up to 100 years; write e.g. '30days'"),
                    ));
                    None
                }
            });
    Some(TimeTravel { max_age })
}

fn validate_column(
    at: &str,
    column: &ColumnDescriptor,
    problems: &mut Vec<Problem>,
) -> Option<Column> {
    check_identifier(&format!("{at}.name"), &column.name, problems);
    for (t, tag) in column.tags.iter().enumerate() {
        check_tag(&format!("{at}.tags[{t}]"), tag, problems);
    }
    match DataType::from_str(column.data_type.trim()) {
        Ok(data_type) => Some(Column {
            name: column.name.clone(),
            data_type,
            nullable: column.nullable,
            description: column.description.clone(),
            tags: column.tags.clone(),
            checks: validate_checks(at, column.nullable, column.checks.as_ref(), problems),
        }),
        Err(_) => {
            problems.push(Problem::new(
                format!("{at}.type"),
                format!(
                    "'{}' is not an Arrow type; write e.g. Int64, Utf8, Float64, Boolean, Date32, \
                     Decimal128(12, 2), Timestamp(Microsecond, None) or Timestamp(Microsecond, \"UTC\")",
                    column.data_type
                ),
            ));
            None
        }
    }
}

fn is_partition_type(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Date32
    )
}

/// Parses a table location: an absolute URL (`file:///...`, `s3://bucket/...`) or a
/// path relative to the mesh root. The result always ends in `/` (a directory).
fn parse_location(
    at: &str,
    text: &str,
    mesh_root: &Path,
    problems: &mut Vec<Problem>,
) -> Option<Url> {
    let text = text.trim();
    if text.is_empty() {
        problems.push(Problem::new(
            at,
            "is empty; give the URL of the table's directory",
        ));
        return None;
    }
    let parsed = match Url::parse(text) {
        Ok(url) => url,
        Err(url::ParseError::RelativeUrlWithoutBase) => {
            let path = mesh_root.join(text);
            match path.canonicalize().ok().or_else(|| {
                // Allow locations that do not exist yet: resolve against the canonical root.
                mesh_root.canonicalize().ok().map(|root| root.join(text))
            }) {
                Some(abs) => match Url::from_directory_path(&abs) {
                    Ok(url) => url,
                    Err(()) => {
                        problems.push(Problem::new(at, format!("'{text}' is not a usable path")));
                        return None;
                    }
                },
                None => {
                    problems.push(Problem::new(
                        at,
                        format!("'{text}' cannot be resolved against the mesh root"),
                    ));
                    return None;
                }
            }
        }
        Err(e) => {
            problems.push(Problem::new(at, format!("'{text}' is not a URL ({e})")));
            return None;
        }
    };
    match parsed.scheme() {
        "file" | "s3" => {}
        other => {
            problems.push(Problem::new(
                at,
                format!("scheme '{other}' is not supported; use file:// or s3://"),
            ));
            return None;
        }
    }
    if parsed.scheme() == "s3" && parsed.host_str().is_none_or(str::is_empty) {
        problems.push(Problem::new(
            at,
            "an s3:// location needs a bucket: s3://bucket/prefix/",
        ));
        return None;
    }
    if parsed.query().is_some() || parsed.fragment().is_some() || !parsed.username().is_empty() {
        problems.push(Problem::new(
            at,
            "must not carry credentials, a query or a fragment; storage credentials \
             belong in the gateway's configuration",
        ));
        return None;
    }
    let mut url = parsed;
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Some(url)
}

fn check_identifier(at: &str, value: &str, problems: &mut Vec<Problem>) {
    let valid_chars = value.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid_chars || value.len() > MAX_IDENTIFIER_LEN {
        problems.push(Problem::new(
            at,
            format!(
                "'{value}' is not a valid name; use a lowercase letter followed by lowercase \
                 letters, digits or '_' (at most {MAX_IDENTIFIER_LEN} characters)"
            ),
        ));
    }
}

fn check_tag(at: &str, value: &str, problems: &mut Vec<Problem>) {
    let valid = !value.is_empty()
        && value.len() <= MAX_IDENTIFIER_LEN
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !valid {
        problems.push(Problem::new(
            at,
            format!("'{value}' is not a valid tag; use lowercase letters, digits, '_' or '-'"),
        ));
    }
}

fn check_not_blank(at: &str, value: &str, problems: &mut Vec<Problem>) {
    if value.trim().is_empty() {
        problems.push(Problem::new(at, "is empty; fill it in"));
    }
}

fn check_version(value: &str, problems: &mut Vec<Problem>) {
    let core = value.split(['-', '+']).next().unwrap_or_default();
    let parts: Vec<&str> = core.split('.').collect();
    let valid = parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    if !valid {
        problems.push(Problem::new(
            "version",
            format!("'{value}' is not a MAJOR.MINOR.PATCH version such as '2.1.0'"),
        ));
    }
}
