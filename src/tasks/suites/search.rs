//! `search`: questions over a generated local corpus with `search` (BM25, top results with the first
//! sentence of each document) and `open` (a whole document by id). Facts are about made-up entities, and
//! distractor documents mention the same names with different facts. Level 1: the fact is in a search
//! snippet (1 call). Level 2: a fact deeper in a document (search + open) or two hops over snippets. Level 3:
//! two hops with a deep fact (3-4 calls).
use std::collections::{BTreeMap, BTreeSet};

use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::{json, Value};

use super::arithmetic::NAMES;
use super::{arg_str, coined_words, pick, tool_spec, unknown_tool, Draft, Sandbox, Suite, SuiteError, TaskRng};
use crate::data::{AnswerSpec, Document, Expected, Matcher, Reference, Task, TaskData, ToolCall};

pub struct Search;

/// Results `search` returns.
pub const TOP_K: usize = 4;
const MAX_SNIPPET_CHARS: usize = 160;

pub fn search_spec() -> Value {
    tool_spec("search", "Search the documents. Returns the best matches as: id | title | first sentence.", json!({"query": {"type": "string"}}), &["query"])
}

pub fn open_spec() -> Value {
    tool_spec("open", "Show a whole document by its id.", json!({"doc_id": {"type": "string"}}), &["doc_id"])
}

fn tokens(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric()).filter(|t| !t.is_empty()).map(str::to_lowercase).collect()
}

/// The first sentence, capped.
pub fn snippet(text: &str) -> String {
    let end = text.find(". ").map_or(text.len(), |i| i + 1);
    let s = text[..end].trim();
    if s.chars().count() > MAX_SNIPPET_CHARS {
        let cut: String = s.chars().take(MAX_SNIPPET_CHARS).collect();
        format!("{cut}...")
    } else {
        s.to_string()
    }
}

/// BM25 (k1 = 1.2, b = 0.75) over title + text.
pub struct Index {
    docs: Vec<Document>,
    tfs: Vec<BTreeMap<String, usize>>,
    lens: Vec<usize>,
    df: BTreeMap<String, usize>,
}

impl Index {
    pub fn new(docs: Vec<Document>) -> Self {
        let mut df: BTreeMap<String, usize> = BTreeMap::new();
        let mut tfs = Vec::new();
        let mut lens = Vec::new();
        for d in &docs {
            let toks = tokens(&format!("{} {}", d.title, d.text));
            let mut tf: BTreeMap<String, usize> = BTreeMap::new();
            for t in &toks {
                *tf.entry(t.clone()).or_default() += 1;
            }
            for t in tf.keys() {
                *df.entry(t.clone()).or_default() += 1;
            }
            lens.push(toks.len());
            tfs.push(tf);
        }
        Self { docs, tfs, lens, df }
    }

    /// Indices of the best documents, best first; ties keep corpus order. Documents with score 0 are dropped.
    pub fn search(&self, query: &str, k: usize) -> Vec<usize> {
        let n = self.docs.len() as f64;
        let avg = self.lens.iter().sum::<usize>() as f64 / n.max(1.0);
        let q: BTreeSet<String> = tokens(query).into_iter().collect();
        let mut scored: Vec<(f64, usize)> = (0..self.docs.len())
            .map(|i| {
                let score = q
                    .iter()
                    .map(|t| {
                        let tf = *self.tfs[i].get(t).unwrap_or(&0) as f64;
                        let df = *self.df.get(t).unwrap_or(&0) as f64;
                        let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
                        idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * self.lens[i] as f64 / avg.max(1.0)))
                    })
                    .sum::<f64>();
                (score, i)
            })
            .filter(|(s, _)| *s > 0.0)
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        scored.into_iter().take(k).map(|(_, i)| i).collect()
    }
}

pub struct SearchSandbox {
    index: Index,
}

impl SearchSandbox {
    pub fn new(docs: Vec<Document>) -> Self {
        Self { index: Index::new(docs) }
    }

    pub fn handle(&self, call: &ToolCall) -> Option<Result<String, String>> {
        match call.name.as_str() {
            "search" => Some(arg_str(call, "query").map(|q| {
                let hits = self.index.search(q, TOP_K);
                if hits.is_empty() {
                    return "no results".to_string();
                }
                hits.iter()
                    .map(|&i| {
                        let d = &self.index.docs[i];
                        format!("{} | {} | {}", d.id, d.title, snippet(&d.text))
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })),
            "open" => Some(arg_str(call, "doc_id").and_then(|id| {
                let id = id.trim();
                let d = self.index.docs.iter().find(|d| d.id == id).ok_or_else(|| format!("no document with id `{id}`"))?;
                Ok(if d.title.is_empty() { d.text.clone() } else { format!("{}\n{}", d.title, d.text) })
            })),
            _ => None,
        }
    }
}

impl Sandbox for SearchSandbox {
    fn call(&mut self, call: &ToolCall) -> Result<String, String> {
        self.handle(call).unwrap_or_else(|| Err(unknown_tool(call)))
    }
}

impl Suite for Search {
    fn name(&self) -> &'static str {
        "search"
    }
    fn difficulties(&self) -> Option<std::ops::RangeInclusive<u8>> {
        Some(1..=3)
    }
    fn tool_names(&self) -> Option<&'static [&'static str]> {
        Some(&["search", "open"])
    }
    fn tools(&self, _difficulty: u8) -> Vec<Value> {
        vec![search_spec(), open_spec()]
    }
    fn max_turns(&self, difficulty: u8) -> u32 {
        3 + 2 * u32::from(difficulty)
    }
    fn draft(&self, rng: &mut TaskRng, difficulty: u8) -> Result<Draft, SuiteError> {
        loop {
            let world = World::generate(rng);
            let q = match difficulty {
                1 => world.level1(rng),
                2 => world.level2(rng),
                _ => world.level3(rng),
            };
            // Redraw when a reference query does not surface its document, so that the plan is always valid.
            let sandbox = SearchSandbox::new(world.docs.clone());
            let mut needs = q.needs.iter();
            let ok = q.calls.iter().all(|c| match (c.name.as_str(), sandbox.handle(c)) {
                ("search", Some(Ok(out))) => needs.next().is_some_and(|doc| out.lines().any(|l| l.starts_with(&format!("{doc} |")))),
                (_, result) => matches!(result, Some(Ok(_))),
            });
            if !ok {
                continue;
            }
            return Ok(Draft {
                instruction: q.instruction,
                data: TaskData::Documents { documents: world.docs },
                expected: Expected::Answer(AnswerSpec { answer: q.answer.clone(), aliases: vec![], matcher: Matcher::Exact }),
                reference: Reference { calls: q.calls, answer: q.answer, actions: Vec::new() },
            });
        }
    }
    fn sandbox(&self, task: &Task) -> Result<Box<dyn Sandbox>, SuiteError> {
        match &task.data {
            TaskData::Documents { documents } => Ok(Box::new(SearchSandbox::new(documents.clone()))),
            _ => Err(SuiteError::BadTask { task: task.id.clone(), message: "`data` must be of kind `documents`".into() }),
        }
    }
}

const PROFESSIONS: &[&str] = &["painter", "engineer", "baker", "sailor", "teacher", "chemist", "poet", "architect"];
const PRODUCTS: &[&str] = &["bicycles", "lamps", "glass", "clocks", "boats", "paper", "rope", "tiles"];

struct City {
    name: String,
    region: String,
    river: String,
    founded: i64,
    doc: String,
}
struct Person {
    name: String,
    profession: &'static str,
    city: usize,
    born: i64,
    doc: String,
}
struct Company {
    name: String,
    city: usize,
    founder: usize,
    founded: i64,
    product: &'static str,
    doc: String,
}

struct World {
    docs: Vec<Document>,
    cities: Vec<City>,
    people: Vec<Person>,
    companies: Vec<Company>,
}

/// A question, its reference calls, and for each `search` call in order the doc id its results must contain.
struct Question {
    instruction: String,
    calls: Vec<ToolCall>,
    needs: Vec<String>,
    answer: String,
}

fn search_call(q: &str) -> ToolCall {
    ToolCall::new("search", json!({ "query": q }))
}
fn open_call(id: &str) -> ToolCall {
    ToolCall::new("open", json!({ "doc_id": id }))
}

impl World {
    fn generate(rng: &mut TaskRng) -> Self {
        let mut taken = BTreeSet::new();
        let (nc, np, nk) = (rng.random_range(3..6), rng.random_range(3..6), rng.random_range(2..4));
        let city_names = coined_words(rng, nc, &mut taken);
        let regions = coined_words(rng, 3, &mut taken);
        let rivers = coined_words(rng, nc, &mut taken);
        let surnames = coined_words(rng, np, &mut taken);
        let company_names = coined_words(rng, nk, &mut taken);
        let n_docs = nc + np + nk + 3;
        let mut ids: Vec<String> = (1..=n_docs).map(|i| format!("d{i}")).collect();
        ids.shuffle(rng);
        let mut ids = ids.into_iter();
        let mut next_id = || ids.next().unwrap_or_default();
        let cities: Vec<City> = city_names
            .into_iter()
            .zip(rivers)
            .map(|(name, river)| City { name, region: pick(rng, &regions).clone(), river, founded: rng.random_range(1100..1900), doc: next_id() })
            .collect();
        let people: Vec<Person> = surnames
            .into_iter()
            .map(|s| Person {
                name: format!("{} {s}", pick(rng, NAMES)),
                profession: PROFESSIONS[rng.random_range(0..PROFESSIONS.len())],
                city: rng.random_range(0..nc),
                born: rng.random_range(1900..2000),
                doc: next_id(),
            })
            .collect();
        let companies: Vec<Company> = company_names
            .into_iter()
            .map(|name| Company {
                name,
                city: rng.random_range(0..nc),
                founder: rng.random_range(0..np),
                founded: rng.random_range(1950..2020),
                product: PRODUCTS[rng.random_range(0..PRODUCTS.len())],
                doc: next_id(),
            })
            .collect();
        let mut docs = Vec::new();
        for c in &cities {
            docs.push(Document {
                id: c.doc.clone(),
                title: c.name.clone(),
                text: format!(
                    "{n} is a city in the region of {r}. It lies on the {v} river. {n} was founded in {y}.",
                    n = c.name,
                    r = c.region,
                    v = c.river,
                    y = c.founded
                ),
            });
        }
        for p in &people {
            docs.push(Document {
                id: p.doc.clone(),
                title: p.name.clone(),
                text: format!(
                    "{n} is a {j} from {c}. {n} was born in {y} and still works as a {j}.",
                    n = p.name,
                    j = p.profession,
                    c = cities[p.city].name,
                    y = p.born
                ),
            });
        }
        for k in &companies {
            docs.push(Document {
                id: k.doc.clone(),
                title: k.name.clone(),
                text: format!(
                    "{n} is a company based in {c}. It was founded by {f} in {y}. {n} makes {p}.",
                    n = k.name,
                    c = cities[k.city].name,
                    f = people[k.founder].name,
                    y = k.founded,
                    p = k.product
                ),
            });
        }
        // Distractors: prizes named after entities, with years and places that are not the asked facts.
        for _ in 0..3 {
            let honoured = pick(rng, &people).name.clone();
            let place = &pick(rng, &cities).name;
            docs.push(Document {
                id: next_id(),
                title: format!("{honoured} Prize"),
                text: format!("The {honoured} Prize is an award given in {place}. It was first awarded in {}.", rng.random_range(1900..2020)),
            });
        }
        docs.sort_by_key(|d| d.id.trim_start_matches('d').parse::<usize>().unwrap_or(0));
        World { docs, cities, people, companies }
    }

    fn level1(&self, rng: &mut TaskRng) -> Question {
        let (instruction, doc, query, answer) = match rng.random_range(0..4) {
            0 => {
                let c = pick(rng, &self.cities);
                (format!("In which region is the city of {}?", c.name), &c.doc, c.name.clone(), c.region.clone())
            }
            1 => {
                let p = pick(rng, &self.people);
                (format!("Which city is {} from?", p.name), &p.doc, p.name.clone(), self.cities[p.city].name.clone())
            }
            2 => {
                let p = pick(rng, &self.people);
                (format!("What is the profession of {}?", p.name), &p.doc, p.name.clone(), p.profession.to_string())
            }
            _ => {
                let k = pick(rng, &self.companies);
                (format!("In which city is the company {} based?", k.name), &k.doc, k.name.clone(), self.cities[k.city].name.clone())
            }
        };
        Question { instruction, calls: vec![search_call(&query)], needs: vec![doc.clone()], answer }
    }

    /// A fact that needs `open`: (question about `what`, doc id, search query, answer).
    fn deep_fact(&self, rng: &mut TaskRng, kind: usize, i: usize, what: &str) -> (String, String, String, String) {
        match kind {
            0 => {
                let c = &self.cities[i];
                if rng.random_bool(0.5) {
                    (format!("In which year was {what} founded?"), c.doc.clone(), c.name.clone(), c.founded.to_string())
                } else {
                    (format!("On which river does {what} lie?"), c.doc.clone(), c.name.clone(), c.river.clone())
                }
            }
            1 => {
                let p = &self.people[i];
                (format!("In which year was {what} born?"), p.doc.clone(), p.name.clone(), p.born.to_string())
            }
            _ => {
                let k = &self.companies[i];
                if rng.random_bool(0.5) {
                    (format!("What does {what} make?"), k.doc.clone(), k.name.clone(), k.product.to_string())
                } else {
                    (format!("In which year was {what} founded?"), k.doc.clone(), k.name.clone(), k.founded.to_string())
                }
            }
        }
    }

    fn level2(&self, rng: &mut TaskRng) -> Question {
        if rng.random_bool(0.5) {
            let kind = rng.random_range(0..3);
            let (i, what) = match kind {
                0 => {
                    let i = rng.random_range(0..self.cities.len());
                    (i, format!("the city of {}", self.cities[i].name))
                }
                1 => {
                    let i = rng.random_range(0..self.people.len());
                    (i, self.people[i].name.clone())
                }
                _ => {
                    let i = rng.random_range(0..self.companies.len());
                    (i, self.companies[i].name.clone())
                }
            };
            let (instruction, doc, query, answer) = self.deep_fact(rng, kind, i, &what);
            return Question { instruction, calls: vec![search_call(&query), open_call(&doc)], needs: vec![doc], answer };
        }
        // Two hops over snippets: a person's or company's city, then that city's region.
        let (subject, doc, city) = if rng.random_bool(0.5) {
            let p = pick(rng, &self.people);
            (format!("the city that {} is from", p.name), (p.doc.clone(), p.name.clone()), p.city)
        } else {
            let k = pick(rng, &self.companies);
            (format!("the city where {} is based", k.name), (k.doc.clone(), k.name.clone()), k.city)
        };
        let c = &self.cities[city];
        Question {
            instruction: format!("In which region is {subject}?"),
            calls: vec![search_call(&doc.1), search_call(&c.name)],
            needs: vec![doc.0, c.doc.clone()],
            answer: c.region.clone(),
        }
    }

    fn level3(&self, rng: &mut TaskRng) -> Question {
        if rng.random_bool(0.5) {
            // Person -> city (snippet) -> a deep city fact.
            let p = pick(rng, &self.people);
            let (instruction, doc, query, answer) = self.deep_fact(rng, 0, p.city, &format!("the city that {} is from", p.name));
            Question { instruction, calls: vec![search_call(&p.name), search_call(&query), open_call(&doc)], needs: vec![p.doc.clone(), doc], answer }
        } else {
            // Company -> founder (second sentence, so open) -> founder's birth year (open again).
            let k = pick(rng, &self.companies);
            let f = &self.people[k.founder];
            Question {
                instruction: format!("In which year was the founder of {} born?", k.name),
                calls: vec![search_call(&k.name), open_call(&k.doc), search_call(&f.name), open_call(&f.doc)],
                needs: vec![k.doc.clone(), f.doc.clone()],
                answer: f.born.to_string(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(id: &str, title: &str, text: &str) -> Document {
        Document { id: id.into(), title: title.into(), text: text.into() }
    }

    #[test]
    fn bm25_ranks_the_matching_document_first() {
        let s = SearchSandbox::new(vec![
            doc("d1", "Varnol", "Varnol is a city. It lies on a river."),
            doc("d2", "Tarmib", "Tarmib is a city. It was founded long ago."),
            doc("d3", "Varnol Prize", "The Varnol Prize is an award given in Tarmib."),
        ]);
        let out = s.handle(&search_call("Tarmib founded")).unwrap().unwrap();
        assert!(out.starts_with("d2 | Tarmib | Tarmib is a city."), "{out}");
        let out = s.handle(&search_call("zzz")).unwrap().unwrap();
        assert_eq!(out, "no results");
        assert_eq!(s.handle(&open_call("d1")).unwrap().unwrap(), "Varnol\nVarnol is a city. It lies on a river.");
        assert!(s.handle(&open_call("d9")).unwrap().is_err());
    }
}
