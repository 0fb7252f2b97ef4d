//! `tables`: questions over a small generated database with `list_tables`, `lookup` (table, key) and `query`
//! (table, column, value). The schema is fixed and stated in the system prompt; rows are drawn per task.
//! Level 1 is one lookup, level 2 two hops (a foreign key, or two queries), level 3 three hops.
use std::collections::BTreeSet;

use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::{json, Value};

use super::arithmetic::NAMES;
use super::{arg_str, coined_words, pick, tool_spec, unknown_tool, Draft, Sandbox, Suite, SuiteError, TaskRng};
use crate::data::{AnswerSpec, Expected, Matcher, Reference, Table, Task, TaskData, ToolCall};
use crate::tools::toolcall::to_py_json;

pub struct Tables;

const EMPLOYEES: &[&str] = &["name", "department", "city", "age", "salary"];
const DEPARTMENTS: &[&str] = &["name", "manager", "floor", "city", "budget"];
const CITIES: &[&str] = &["name", "country", "population"];
const DEPT_NAMES: &[&str] = &["Sales", "Research", "Support", "Finance", "Legal", "Design", "Logistics", "Marketing"];
/// Rows `query` prints before eliding the rest.
const MAX_QUERY_ROWS: usize = 20;

impl Suite for Tables {
    fn name(&self) -> &'static str {
        "tables"
    }
    fn difficulties(&self) -> Option<std::ops::RangeInclusive<u8>> {
        Some(1..=3)
    }
    fn tool_names(&self) -> Option<&'static [&'static str]> {
        Some(&["list_tables", "lookup", "query"])
    }
    fn tools(&self, _difficulty: u8) -> Vec<Value> {
        vec![
            tool_spec("list_tables", "List the tables and their columns.", json!({}), &[]),
            tool_spec(
                "lookup",
                "Get the row of a table whose first column (the name) equals key.",
                json!({"table": {"type": "string"}, "key": {"type": "string"}}),
                &["table", "key"],
            ),
            tool_spec(
                "query",
                "List the names of the rows of a table whose column equals value.",
                json!({"table": {"type": "string"}, "column": {"type": "string"}, "value": {"type": ["string", "number"]}}),
                &["table", "column", "value"],
            ),
        ]
    }
    fn max_turns(&self, difficulty: u8) -> u32 {
        3 + 2 * u32::from(difficulty)
    }
    fn draft(&self, rng: &mut TaskRng, difficulty: u8) -> Result<Draft, SuiteError> {
        let db = Db::generate(rng);
        let q = match difficulty {
            1 => db.one_hop(rng),
            2 => db.two_hops(rng),
            _ => db.three_hops(rng),
        };
        let tables = db.tables();
        let mut sandbox = TablesSandbox { tables: tables.clone() };
        let outputs = super::replay(&mut sandbox, &q.calls).map_err(|m| SuiteError::BadTask { task: q.instruction.clone(), message: m })?;
        let answer = match &q.answer {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            // Counting questions: the answer is the length of the last query's list.
            _ => serde_json::from_str::<Vec<Value>>(outputs.last().map_or("[]", String::as_str)).map(|v| v.len().to_string()).unwrap_or_default(),
        };
        let matcher = if answer.parse::<f64>().is_ok() { Matcher::Number { abs_tol: 1e-6, rel_tol: 0.0 } } else { Matcher::Exact };
        Ok(Draft {
            instruction: q.instruction,
            data: TaskData::Tables { tables },
            expected: Expected::Answer(AnswerSpec { answer: answer.clone(), aliases: vec![], matcher }),
            reference: Reference { calls: q.calls, answer, actions: Vec::new() },
        })
    }
    fn sandbox(&self, task: &Task) -> Result<Box<dyn Sandbox>, SuiteError> {
        match &task.data {
            TaskData::Tables { tables } => Ok(Box::new(TablesSandbox { tables: tables.clone() })),
            _ => Err(SuiteError::BadTask { task: task.id.clone(), message: "`data` must be of kind `tables`".into() }),
        }
    }
}

struct Employee {
    name: String,
    department: usize,
    city: usize,
    age: i64,
    salary: i64,
}
struct Department {
    name: &'static str,
    manager: usize,
    floor: i64,
    city: usize,
    budget: i64,
}
struct City {
    name: String,
    country: String,
    population: i64,
}

struct Db {
    employees: Vec<Employee>,
    departments: Vec<Department>,
    cities: Vec<City>,
}

/// A question with its reference calls; `answer` is null for counting questions.
struct Question {
    instruction: String,
    calls: Vec<ToolCall>,
    answer: Value,
}

fn lookup(table: &str, key: &str) -> ToolCall {
    ToolCall::new("lookup", json!({"table": table, "key": key}))
}

impl Db {
    fn generate(rng: &mut TaskRng) -> Self {
        let mut taken = BTreeSet::new();
        let n_cities = rng.random_range(4..7);
        let city_names = coined_words(rng, n_cities, &mut taken);
        let countries = coined_words(rng, 3, &mut taken);
        let cities =
            city_names.into_iter().map(|name| City { name, country: pick(rng, &countries).clone(), population: rng.random_range(10..2000) * 1000 }).collect();
        let n_emp = rng.random_range(8..13);
        let surnames = coined_words(rng, n_emp, &mut taken);
        let mut dept_names = DEPT_NAMES.to_vec();
        dept_names.shuffle(rng);
        dept_names.truncate(rng.random_range(3..6));
        let employees: Vec<Employee> = surnames
            .into_iter()
            .enumerate()
            .map(|(i, surname)| Employee {
                name: format!("{} {surname}", pick(rng, NAMES)),
                // Round-robin first, so every department has at least one employee to manage it.
                department: if i < dept_names.len() { i } else { rng.random_range(0..dept_names.len()) },
                city: rng.random_range(0..n_cities),
                age: rng.random_range(22..65),
                salary: rng.random_range(60..240) * 500,
            })
            .collect();
        let mut floors: Vec<i64> = (1..13).collect();
        floors.shuffle(rng);
        let departments = dept_names
            .iter()
            .enumerate()
            .map(|(d, name)| {
                let staff: Vec<usize> = (0..employees.len()).filter(|&e| employees[e].department == d).collect();
                Department {
                    name,
                    manager: *pick(rng, &staff),
                    floor: floors[d],
                    city: rng.random_range(0..n_cities),
                    budget: rng.random_range(20..500) * 1000,
                }
            })
            .collect();
        Db { employees, departments, cities }
    }

    fn tables(&self) -> Vec<Table> {
        let cols = |c: &[&str]| c.iter().map(|s| s.to_string()).collect();
        vec![
            Table {
                name: "employees".into(),
                columns: cols(EMPLOYEES),
                rows: self
                    .employees
                    .iter()
                    .map(|e| vec![json!(e.name), json!(self.departments[e.department].name), json!(self.cities[e.city].name), json!(e.age), json!(e.salary)])
                    .collect(),
            },
            Table {
                name: "departments".into(),
                columns: cols(DEPARTMENTS),
                rows: self
                    .departments
                    .iter()
                    .map(|d| vec![json!(d.name), json!(self.employees[d.manager].name), json!(d.floor), json!(self.cities[d.city].name), json!(d.budget)])
                    .collect(),
            },
            Table {
                name: "cities".into(),
                columns: cols(CITIES),
                rows: self.cities.iter().map(|c| vec![json!(c.name), json!(c.country), json!(c.population)]).collect(),
            },
        ]
    }

    fn is_manager(&self, e: usize) -> bool {
        self.departments.iter().any(|d| d.manager == e)
    }

    fn one_hop(&self, rng: &mut TaskRng) -> Question {
        match rng.random_range(0..3) {
            0 => {
                let e = &self.employees[rng.random_range(0..self.employees.len())];
                let (instruction, answer) = match rng.random_range(0..4) {
                    0 => (format!("How old is {}?", e.name), json!(e.age)),
                    1 => (format!("What is the salary of {}?", e.name), json!(e.salary)),
                    2 => (format!("Which department does {} work in?", e.name), json!(self.departments[e.department].name)),
                    _ => (format!("In which city does {} live?", e.name), json!(self.cities[e.city].name)),
                };
                Question { instruction, calls: vec![lookup("employees", &e.name)], answer }
            }
            1 => {
                let d = &self.departments[rng.random_range(0..self.departments.len())];
                let (instruction, answer) = self.department_fact(rng, d, &format!("the {} department", d.name));
                Question { instruction, calls: vec![lookup("departments", d.name)], answer }
            }
            _ => {
                let c = &self.cities[rng.random_range(0..self.cities.len())];
                let (instruction, answer) = city_fact(rng, c, &c.name);
                Question { instruction, calls: vec![lookup("cities", &c.name)], answer }
            }
        }
    }

    fn department_fact(&self, rng: &mut TaskRng, d: &Department, what: &str) -> (String, Value) {
        match rng.random_range(0..4) {
            0 => (format!("Who manages {what}?"), json!(self.employees[d.manager].name)),
            1 => (format!("On which floor is {what}?"), json!(d.floor)),
            2 => (format!("What is the budget of {what}?"), json!(d.budget)),
            _ => (format!("In which city is {what}?"), json!(self.cities[d.city].name)),
        }
    }

    fn two_hops(&self, rng: &mut TaskRng) -> Question {
        let e = &self.employees[rng.random_range(0..self.employees.len())];
        let dept = &self.departments[e.department];
        match rng.random_range(0..3) {
            0 => {
                let (instruction, answer) = self.department_fact(rng, dept, &format!("the department that {} works in", e.name));
                Question { instruction, calls: vec![lookup("employees", &e.name), lookup("departments", dept.name)], answer }
            }
            1 => {
                let c = &self.cities[e.city];
                let (instruction, answer) = city_fact(rng, c, &format!("the city where {} lives", e.name));
                Question { instruction, calls: vec![lookup("employees", &e.name), lookup("cities", &c.name)], answer }
            }
            _ => {
                let manager = &self.employees[dept.manager].name;
                Question {
                    instruction: format!("How many employees work in the department managed by {manager}?"),
                    calls: vec![
                        ToolCall::new("query", json!({"table": "departments", "column": "manager", "value": manager})),
                        ToolCall::new("query", json!({"table": "employees", "column": "department", "value": dept.name})),
                    ],
                    answer: Value::Null,
                }
            }
        }
    }

    fn three_hops(&self, rng: &mut TaskRng) -> Question {
        // A manager asked about their own department would already hold the third row after one lookup.
        let candidates: Vec<usize> = (0..self.employees.len()).filter(|&e| !self.is_manager(e)).collect();
        let e = &self.employees[*pick(rng, &candidates)];
        let dept = &self.departments[e.department];
        let first = vec![lookup("employees", &e.name), lookup("departments", dept.name)];
        let (instruction, last, answer) = if rng.random_bool(0.5) {
            let m = &self.employees[dept.manager];
            let (instruction, answer) = match rng.random_range(0..2) {
                0 => (format!("How old is the manager of the department that {} works in?", e.name), json!(m.age)),
                _ => (format!("In which city does the manager of the department that {} works in live?", e.name), json!(self.cities[m.city].name)),
            };
            (instruction, lookup("employees", &m.name), answer)
        } else {
            let c = &self.cities[dept.city];
            let (instruction, answer) = city_fact(rng, c, &format!("the city where the department of {} is located", e.name));
            (instruction, lookup("cities", &c.name), answer)
        };
        let mut calls = first;
        calls.push(last);
        Question { instruction, calls, answer }
    }
}

fn city_fact(rng: &mut TaskRng, c: &City, what: &str) -> (String, Value) {
    if rng.random_bool(0.5) {
        (format!("In which country is {what}?"), json!(c.country))
    } else {
        (format!("What is the population of {what}?"), json!(c.population))
    }
}

pub struct TablesSandbox {
    tables: Vec<Table>,
}

fn same_value(cell: &Value, wanted: &Value) -> bool {
    let as_num = |v: &Value| v.as_f64().or_else(|| v.as_str().and_then(|s| s.trim().parse::<f64>().ok()));
    match (cell, wanted) {
        (Value::String(a), Value::String(b)) if as_num(cell).is_none() => a.trim().eq_ignore_ascii_case(b.trim()),
        _ => matches!((as_num(cell), as_num(wanted)), (Some(a), Some(b)) if a == b),
    }
}

impl TablesSandbox {
    fn table(&self, name: &str) -> Result<&Table, String> {
        self.tables.iter().find(|t| t.name.eq_ignore_ascii_case(name.trim())).ok_or_else(|| {
            let names: Vec<&str> = self.tables.iter().map(|t| t.name.as_str()).collect();
            format!("no table `{name}`; tables: {}", names.join(", "))
        })
    }
}

impl Sandbox for TablesSandbox {
    fn call(&mut self, call: &ToolCall) -> Result<String, String> {
        match call.name.as_str() {
            "list_tables" => Ok(self.tables.iter().map(|t| format!("{}({})", t.name, t.columns.join(", "))).collect::<Vec<_>>().join("\n")),
            "lookup" => {
                let t = self.table(arg_str(call, "table")?)?;
                let key = json!(arg_str(call, "key")?);
                let row = t.rows.iter().find(|r| r.first().is_some_and(|k| same_value(k, &key)));
                let row = row.ok_or_else(|| format!("no row in {} with {} {key}", t.name, t.columns[0]))?;
                // Built by hand so that fields keep column order whatever serde_json's map ordering is.
                let fields: Vec<String> = t.columns.iter().zip(row).map(|(c, v)| format!("{}: {}", to_py_json(&json!(c)), to_py_json(v))).collect();
                Ok(format!("{{{}}}", fields.join(", ")))
            }
            "query" => {
                let t = self.table(arg_str(call, "table")?)?;
                let column = arg_str(call, "column")?;
                let col = t
                    .columns
                    .iter()
                    .position(|c| c.eq_ignore_ascii_case(column.trim()))
                    .ok_or_else(|| format!("table {} has no column `{column}`; columns: {}", t.name, t.columns.join(", ")))?;
                let wanted = call.arguments.get("value").cloned().unwrap_or(Value::Null);
                let keys: Vec<Value> =
                    t.rows.iter().filter(|r| r.get(col).is_some_and(|c| same_value(c, &wanted))).filter_map(|r| r.first().cloned()).collect();
                let mut out = to_py_json(&Value::Array(keys.iter().take(MAX_QUERY_ROWS).cloned().collect()));
                if keys.len() > MAX_QUERY_ROWS {
                    out.push_str(&format!(" (and {} more)", keys.len() - MAX_QUERY_ROWS));
                }
                Ok(out)
            }
            _ => Err(unknown_tool(call)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_and_query_match_loosely_on_case_and_numbers() {
        let mut s = TablesSandbox {
            tables: vec![Table {
                name: "cities".into(),
                columns: vec!["name".into(), "country".into(), "population".into()],
                rows: vec![vec![json!("Varnol"), json!("Eskia"), json!(1000)], vec![json!("Tarmib"), json!("Eskia"), json!(2000)]],
            }],
        };
        let c = |name: &str, args: Value| ToolCall::new(name, args);
        assert_eq!(
            s.call(&c("lookup", json!({"table": "Cities", "key": "varnol"}))).unwrap(),
            "{\"name\": \"Varnol\", \"country\": \"Eskia\", \"population\": 1000}"
        );
        assert_eq!(s.call(&c("query", json!({"table": "cities", "column": "country", "value": "Eskia"}))).unwrap(), "[\"Varnol\", \"Tarmib\"]");
        assert_eq!(s.call(&c("query", json!({"table": "cities", "column": "population", "value": "2000"}))).unwrap(), "[\"Tarmib\"]");
        assert_eq!(s.call(&c("query", json!({"table": "cities", "column": "population", "value": 5}))).unwrap(), "[]");
        assert!(s.call(&c("lookup", json!({"table": "towns", "key": "x"}))).unwrap_err().contains("tables: cities"));
        assert!(s.call(&c("query", json!({"table": "cities", "column": "size", "value": 1}))).unwrap_err().contains("columns"));
    }
}
