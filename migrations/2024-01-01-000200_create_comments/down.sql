DROP INDEX comments_post_id;
DROP TABLE comments;
